"""deploy/prometheus: promtool accepts the config and rules, the rule unit tests pass,
and every alert is tested both ways and explained in docs/deploy.md."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import ROOT, run

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
ALERTS = [rule for group in RULES for rule in group["rules"]]
TESTS = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())


def test_promtool_accepts_config_and_rules() -> None:
    output = run("promtool", "check", "config", "prometheus.yml", cwd=PROMETHEUS)
    assert "1 rule files found" in output
    output = run("promtool", "check", "rules", "alerts.yml", cwd=PROMETHEUS)
    assert f"SUCCESS: {len(ALERTS)} rules found" in output


def test_rule_unit_tests_pass() -> None:
    assert "SUCCESS" in run("promtool", "test", "rules", "alerts_test.yml", cwd=PROMETHEUS)


def test_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """The same tests against rules whose threshold moved must fail."""
    moved = (PROMETHEUS / "alerts.yml").read_text().replace("age_seconds) > 2", "age_seconds) > 9")
    (tmp_path / "alerts.yml").write_text(moved)
    (tmp_path / "alerts_test.yml").write_text((PROMETHEUS / "alerts_test.yml").read_text())
    with pytest.raises(AssertionError, match="ResnetServeQueueBackingUp"):
        run("promtool", "test", "rules", "alerts_test.yml", cwd=tmp_path)


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = [case for test in TESTS["tests"] for case in test.get("alert_rule_test", [])]
    for alert in ALERTS:
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{alert['alert']} never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{alert['alert']} never tested quiet"


def test_every_alert_is_labelled_and_explained() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for alert in ALERTS:
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description"} <= set(alert["annotations"])
        assert alert["alert"] in guide, f"docs/deploy.md does not explain {alert['alert']}"
    assert {a["alert"] for a in ALERTS} >= {
        "ResnetServeQueueBackingUp",
        "ResnetServeLatencyP99OverSLO",
        "ResnetServeErrorRatioHigh",
        "ResnetServeNoReadyWorkers",
        "ResnetServeDeadLettersGrowing",
    }


def test_kubernetes_gets_the_same_alerts_as_a_prometheusrule() -> None:
    """k8s/base/alerts.yaml is alerts.yml for the Prometheus Operator (`make k8s-alerts`)."""
    from tests.deploy.k8s import find, render

    rule = find(render("k8s/base"), "PrometheusRule", "resnet-serve")
    assert rule["spec"]["groups"] == RULES, "run `make k8s-alerts`"
