"""The Grafana dashboard: well-formed, wired to the provisioned datasource, and showing
every metric of the contract with the panels an operator needs."""

from __future__ import annotations

import json
import re

import yaml

from resnet_serve.shared.metrics import Metrics
from tests.deploy.contract import METRICS
from tests.deploy.queries import DASHBOARDS, dashboard_queries
from tests.deploy.tools import ROOT

DASHBOARD = DASHBOARDS / "resnet-serve.json"
SPEC = json.loads(DASHBOARD.read_text())
PANELS = [p for p in SPEC["panels"] if p["type"] != "row"]
DATASOURCE = yaml.safe_load(
    (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
)["datasources"][0]


def test_panels_are_well_formed_and_do_not_overlap() -> None:
    assert SPEC["uid"] == "resnet-serve"
    ids = [p["id"] for p in SPEC["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in SPEC["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    for panel in PANELS:
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_every_query_uses_the_provisioned_datasource() -> None:
    wanted = {"type": DATASOURCE["type"], "uid": DATASOURCE["uid"]}
    for panel in PANELS:
        assert panel["datasource"] == wanted, panel["title"]
        assert all(t["datasource"] == wanted for t in panel["targets"]), panel["title"]
    for variable in SPEC["templating"]["list"]:
        assert variable["datasource"] == wanted


def test_every_contract_metric_is_on_the_dashboard() -> None:
    used = set().union(*(q.metrics() for q in dashboard_queries(DASHBOARD)))
    bases = {re.sub(r"_(bucket|sum|count)$", "", m) if m not in METRICS else m for m in used}
    assert bases == set(METRICS)


def _exprs(title_word: str) -> str:
    return " ".join(
        t["expr"] for p in PANELS if title_word.lower() in p["title"].lower() for t in p["targets"]
    )


def test_the_panels_the_issue_asks_for() -> None:
    assert "sum by (status) (rate(resnet_serve_requests_total" in _exprs("by status")
    assert "sum by (code) (rate(resnet_serve_errors_total" in _exprs("by code")
    for title, metric in [
        ("request latency", "resnet_serve_request_duration_seconds_bucket"),
        ("queue wait", "resnet_serve_queue_wait_seconds_bucket"),
        ("inference per batch", "resnet_serve_inference_duration_seconds_bucket"),
    ]:
        exprs = _exprs(title)
        for q in ("0.5", "0.95", "0.99"):
            assert f"histogram_quantile({q}, sum by (le) (rate({metric}" in exprs, (title, q)
    assert "resnet_serve_queue_depth" in _exprs("queue depth")
    assert "resnet_serve_queue_oldest_age_seconds" in _exprs("oldest")
    assert "resnet_serve_batch_size_bucket" in _exprs("batch size")
    assert "/ max(resnet_serve_max_batch" in _exprs("fill ratio")
    workers = _exprs("workers: live and needed")
    assert "resnet_serve_workers{" in workers
    assert "resnet_serve_workers_needed{" in workers
    assert 'resnet_serve_cache_lookups_total{result="hit"}' in _exprs("cache hit ratio")


def test_the_contract_is_what_the_code_registers() -> None:
    """METRICS (what dashboards and alerts may use) is exactly what shared/metrics.py
    registers: a metric added there shows up here, to be put on the dashboard."""
    registered = {
        f.name + ("_total" if f.type == "counter" else ""): f.type
        for f in Metrics().registry.collect()
    }
    assert registered == METRICS
