"""tests/deploy/queries.py finds every expression, and every expression is valid PromQL
over the contract's metric names only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.contract import series_names
from tests.deploy.queries import ALERTS, DASHBOARDS, ROOT, Query, all_queries, dashboard_queries
from tests.deploy.tools import run

DASHBOARD = DASHBOARDS / "resnet-serve.json"


def test_finds_every_panel_target_variable_and_rule() -> None:
    text = DASHBOARD.read_text()
    queries = all_queries()
    # Counted independently of the walker: the raw text of both files.
    assert sum(q.source == "panel" for q in queries) == text.count('"expr":')
    # Each query variable spells label_values( twice: its query and its definition.
    assert sum(q.source == "variable" for q in queries) == text.count("label_values(") // 2
    assert sum(q.source == "alert" for q in queries) == len(
        re.findall(r"^\s+expr:", ALERTS.read_text(), re.MULTILINE)
    )
    autoscaling = (ROOT / "k8s" / "base" / "autoscaling.yaml").read_text()
    assert sum(q.source == "keda" for q in queries) == len(
        re.findall(r"^        query:", autoscaling, re.MULTILINE)
    )
    assert len({q.name for q in queries}) == len(queries), "query names must be unique"


def test_finds_targets_inside_collapsed_rows(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    first = dashboard["panels"][1]
    dashboard["panels"] = [{"type": "row", "title": "folded", "panels": [first]}]
    path = tmp_path / "folded.json"
    path.write_text(json.dumps(dashboard))
    panels = [q for q in dashboard_queries(path) if q.source == "panel"]
    assert [q.expr for q in panels] == [t["expr"] for t in first["targets"]]


def test_grafana_variables_are_resolved() -> None:
    query = Query("panel", "x", 'rate(a{model="$model"}[$__rate_interval]) + b{m="${model}"}')
    assert query.promql() == 'rate(a{model="resnet18"}[1m]) + b{m="resnet18"}'
    assert query.promql({"model": "m", "__rate_interval": "5m"}) == (
        'rate(a{model="m"}[5m]) + b{m="m"}'
    )
    with pytest.raises(KeyError):
        Query("panel", "x", "rate(a[$unknown])").promql()
    for q in all_queries():
        assert "$" not in q.promql(), q
        assert "[[" not in q.promql(), q


def test_every_expression_uses_contract_metrics_only() -> None:
    allowed = series_names()
    for q in all_queries():
        assert q.metrics(), f"{q.name} selects no resnet_serve_* metric"
        assert q.metrics() <= allowed, f"{q.name}: not in the contract: {q.metrics() - allowed}"


def test_alert_probes_return_data_while_quiet() -> None:
    query = Query("alert", "x", 'max by (m) (a{l=~"x>y"}) - min(b[5m] offset 1m) > 0.5')
    assert query.probe() == 'max by (m) (a{l=~"x>y"}) - min(b[5m] offset 1m) > bool 0.5'
    assert Query("alert", "x", "a == 0").probe() == "a == bool 0"
    assert Query("alert", "x", "a >= on (m) b").probe() == "a >= bool on (m) b"
    assert Query("panel", "x", "a > 0").probe() == "a > 0"
    with pytest.raises(AssertionError, match="no top-level comparison"):
        Query("alert", "x", 'sum(a{b!="c"} > 1)').probe()


def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool parses each expression (and each alert's probe) as a recording rule: a
    syntax error in any panel query fails here, without a Prometheus server."""
    exprs = [q.promql() for q in all_queries()] + [q.probe() for q in all_queries()]
    rules = [{"record": f"check:q{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    output = run("promtool", "check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in output


def test_a_broken_expression_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    rule = {"record": "check:broken", "expr": "sum(rate(resnet_serve_requests_total[1m])"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "broken", "rules": [rule]}]}))
    with pytest.raises(AssertionError, match=r"unclosed|parse error"):
        run("promtool", "check", "rules", str(path))
