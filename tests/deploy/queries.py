"""Every PromQL expression the deploy files run: dashboard panel and variable queries,
alerting rules and the KEDA autoscaling query, found by walking the files themselves.

A live test points a real Prometheus at a real service and runs each `Query.promql()`;
the unit tests check syntax (promtool) and metric names (tests/deploy/contract.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
AUTOSCALING = ROOT / "k8s" / "base" / "autoscaling.yaml"

# What Grafana puts in place of its variables before a query reaches Prometheus.
GRAFANA_DEFAULTS: Mapping[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "model": "resnet18",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")
_METRIC = re.compile(r"\bresnet_serve_[a-z0-9_]+\b")


@dataclass(frozen=True, slots=True)
class Query:
    source: str  # "panel", "variable", "alert" or "keda"
    name: str  # dashboard / panel title / refId, or group / alert name
    expr: str  # as written in the file, Grafana variables unresolved

    def promql(self, variables: Mapping[str, str] = GRAFANA_DEFAULTS) -> str:
        """The expression as Prometheus receives it (KeyError for an unknown variable)."""

        def value(match: re.Match[str]) -> str:
            return variables[next(g for g in match.groups() if g)]

        return _VARIABLE.sub(value, self.expr)

    def probe(self, variables: Mapping[str, str] = GRAFANA_DEFAULTS) -> str:
        """An expression that returns series whenever this one's inputs exist.

        An alert expression is empty while the alert does not fire; with `bool` on its
        top-level comparison it returns 0 or 1 instead, so "returns data" checks that
        the metrics it compares are there. Other queries are returned as they are.
        """
        expr = self.promql(variables)
        if self.source != "alert":
            return expr
        at = _top_level_comparison(expr)
        assert at is not None, f"{self.name}: no top-level comparison in {expr!r}"
        return f"{expr[: at[1]]} bool{expr[at[1] :]}"

    def metrics(self) -> set[str]:
        """The resnet_serve_* series names the expression selects."""
        return set(_METRIC.findall(self.expr))


def _top_level_comparison(expr: str) -> tuple[int, int] | None:
    """Span of the last comparison operator outside (), {}, [] and quotes."""
    depth, quote, found, i = 0, "", None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0 and c in "<>=!":
            width = 2 if expr[i : i + 2] in ("==", "!=", ">=", "<=") else 1
            if expr[i : i + width] in ("==", "!=", ">=", "<=", ">", "<"):
                found = (i, i + width)
            i += width
            continue
        i += 1
    return found


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows nest their panels


def dashboard_queries(path: Path) -> list[Query]:
    """Panel targets and query variables of one Grafana dashboard JSON."""
    dashboard = json.loads(path.read_text())
    title = dashboard["title"]
    found = [
        Query("panel", f"{title} / {panel['title']} / {target['refId']}", target["expr"])
        for panel in _panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text.strip())
        # label_values(metric, label) is Grafana's, not PromQL: its series selector is.
        expr = ((match.group(1) or "") if match else text).strip()
        if expr:
            found.append(Query("variable", f"{title} / ${variable['name']}", expr))
    return found


def alert_queries(path: Path = ALERTS) -> list[Query]:
    """Alerting and recording rule expressions of one Prometheus rules file."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return [
        Query("alert", f"{group['name']} / {rule.get('alert') or rule['record']}", rule["expr"])
        for group in groups
        for rule in group["rules"]
    ]


def keda_queries(path: Path = AUTOSCALING) -> list[Query]:
    """The Prometheus queries of KEDA ScaledObjects' prometheus triggers."""
    return [
        Query("keda", f"{doc['metadata']['name']} / trigger {i}", trigger["metadata"]["query"])
        for doc in yaml.safe_load_all(path.read_text())
        if doc["kind"] == "ScaledObject"
        for i, trigger in enumerate(doc["spec"]["triggers"])
        if trigger["type"] == "prometheus"
    ]


def all_queries() -> list[Query]:
    """Every expression in the dashboards, the alerting rules and the KEDA triggers."""
    dashboards = sorted(DASHBOARDS.glob("*.json"))
    panels = [q for path in dashboards for q in dashboard_queries(path)]
    return panels + alert_queries() + keda_queries()
