"""k8s/: every rendered manifest validated offline, and the wiring between them checked
against the code (CLI commands, settings, metric names) and against each other."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import kubernetes_validate
import pydantic
import pytest
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor

from tests.deploy.contract import (
    METRICS,
    command_problems,
    setting_default,
    setting_env_names,
)
from tests.deploy.k8s import (
    EVERY_KUSTOMIZATION,
    KUSTOMIZATIONS,
    Doc,
    container,
    container_port,
    env_value,
    find,
    gateway_containers,
    pod_containers,
    pod_labels,
    render,
    selecting,
    selects,
    workloads,
)
from tests.deploy.tools import ROOT

# Built-in kinds against the oldest Kubernetes we support and the newest schema known.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
# Custom resources: kubernetes-validate has no CRD schemas, so these are validated with
# pydantic models generated from the KEDA 2.16 and Prometheus Operator 0.80 CRDs.
CRD_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "ScaledObject": ScaledObject,
    "ServiceMonitor": ServiceMonitor,
    "PrometheusRule": PrometheusRule,
}
SERVICE_COMPONENTS = ("gateway", "worker", "jobs-worker")
KEDA_QUERY = 'max(resnet_serve_workers_needed{model="resnet18"})'


def validate_custom_resource(doc: Doc) -> None:
    """Validate against the CRD model; a field the CRD does not know is an error too
    (the models ignore unknown fields, so compare the round trip)."""
    model = CRD_MODELS[doc["kind"]].model_validate(doc)
    back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert back == doc, f"{doc['kind']}/{doc['metadata']['name']} has fields its CRD lacks"


@pytest.mark.parametrize("kustomization", EVERY_KUSTOMIZATION)
def test_every_manifest_is_valid(kustomization: str) -> None:
    docs = render(kustomization)
    assert len(docs) >= (15 if kustomization in KUSTOMIZATIONS else 4)
    for doc in docs:
        if doc["kind"] in CRD_MODELS:
            validate_custom_resource(doc)
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_validators_reject_mistakes() -> None:
    docs = render("k8s/base")
    deployment = copy.deepcopy(find(docs, "Deployment", "gateway"))
    container(deployment)["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    # A gRPC probe takes a port number; a port name is refused.
    deployment = copy.deepcopy(find(docs, "Deployment", "gateway"))
    container(deployment)["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    scaled = copy.deepcopy(find(docs, "ScaledObject", "worker"))
    scaled["spec"]["minReplicaCounts"] = 0
    with pytest.raises(AssertionError, match="fields its CRD lacks"):
        validate_custom_resource(scaled)
    scaled = copy.deepcopy(find(docs, "ScaledObject", "worker"))
    scaled["spec"]["maxReplicaCount"] = "many"
    with pytest.raises(pydantic.ValidationError):
        validate_custom_resource(scaled)


@pytest.mark.parametrize("kustomization", EVERY_KUSTOMIZATION)
def test_pods_are_locked_down(kustomization: str) -> None:
    for workload in workloads(render(kustomization)):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in pod_containers(workload):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", c["image"]), f"{name}: untagged image"
            assert not c["image"].endswith(":latest"), name


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_service_containers_run_real_commands_and_settings(kustomization: str) -> None:
    docs = render(kustomization)
    known_env = setting_env_names()
    for component in SERVICE_COMPONENTS:
        workload = find(docs, "Deployment", component)
        c = container(workload)
        assert command_problems(c["command"]) == []
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if "exec" in c.get(probe, {}):
                assert command_problems(c[probe]["exec"]["command"]) == []
        names = [e["name"] for e in c["env"]]
        service_env = [n for n in names if n.startswith("RESNET_SERVE_")]
        assert set(service_env) <= known_env, set(service_env) - known_env
        # $(REDIS_PASSWORD) expands only if defined earlier in the list.
        url = env_value(c, "RESNET_SERVE_REDIS_URL")
        assert url.startswith("redis://:$(REDIS_PASSWORD)@redis:6379/")
        assert names.index("REDIS_PASSWORD") < names.index("RESNET_SERVE_REDIS_URL")
        # The images' HOME is /tmp and their root filesystem read-only.
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]


def test_gateway_probes_ports_and_drain() -> None:
    gateway = find(render("k8s/base"), "Deployment", "gateway")
    c = container(gateway)
    # Ready: grpc.health.v1 (service "", SERVING as /readyz answers 200); alive: HTTP.
    assert c["readinessProbe"]["grpc"] == {"port": setting_default("grpc_port")}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "http")
    assert port == int(env_value(c, "RESNET_SERVE_PORT")) == setting_default("port")
    # preStop sleep, then SIGTERM drains for request_timeout_s + 1 s: all inside the grace.
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = float(env_value(c, "RESNET_SERVE_REQUEST_TIMEOUT_S")) + 1
    assert float(env_value(c, "RESNET_SERVE_REQUEST_TIMEOUT_S")) == setting_default(
        "request_timeout_s"
    )
    grace = gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop + drain + 3 <= grace <= pre_stop + drain + 15


@pytest.mark.parametrize("kustomization", EVERY_KUSTOMIZATION)
def test_gateways_serve_grpc_beside_http(kustomization: str) -> None:
    docs = render(kustomization)
    gateways = list(gateway_containers(docs))
    assert bool(gateways) == (kustomization in KUSTOMIZATIONS)
    for workload, c in gateways:
        name = workload["metadata"]["name"]
        grpc = container_port(c, "grpc")
        assert grpc == int(env_value(c, "RESNET_SERVE_GRPC_PORT")) == setting_default("grpc_port")
        probe = c["readinessProbe"]
        assert probe["grpc"] == {"port": grpc}, name  # no service: the server's overall health
        assert "httpGet" not in probe, name
        services = selecting(docs, "Service", workload)
        assert services, name
        for service in services:
            ports = {p["name"]: p for p in service["spec"]["ports"]}
            assert ports["grpc"]["appProtocol"] == "grpc", service["metadata"]["name"]
            assert ports["grpc"]["port"] == grpc
            assert ports["grpc"]["targetPort"] in ("grpc", grpc)
            assert ports["http"]["appProtocol"] == "http"
        # A NetworkPolicy that admits the gateway's HTTP port admits its gRPC port too.
        for policy in selecting(docs, "NetworkPolicy", workload):
            rules = policy["spec"].get("ingress", [])
            allowed = [p["port"] for rule in rules for p in rule.get("ports", [])]
            if "http" in allowed or container_port(c, "http") in allowed:
                assert "grpc" in allowed or grpc in allowed, policy["metadata"]["name"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_worker_probes_metrics_and_drain(kustomization: str) -> None:
    docs = render(kustomization)
    worker = find(docs, "Deployment", "worker")
    c = container(worker)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["exec"]["command"] == ["resnet-serve", "worker", "--check"]
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "metrics")
    assert port == int(env_value(c, "RESNET_SERVE_WORKER_METRICS_PORT"))
    assert port == setting_default("worker_metrics_port")
    assert env_value(c, "RESNET_SERVE_HOST") == "0.0.0.0"  # the metrics server's bind
    # A worker finishes and acknowledges its batch within ~15 s of SIGTERM.
    assert 20 <= worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] <= 60
    jobs = container(find(docs, "Deployment", "jobs-worker"))
    assert jobs["livenessProbe"]["exec"]["command"] == ["resnet-serve", "jobs-worker", "--check"]


def mounts(c: Doc) -> dict[str, Doc]:
    return {m["mountPath"]: m for m in c.get("volumeMounts", [])}


def claim(workload: Doc, volume: str) -> Doc:
    volumes = workload["spec"]["template"]["spec"]["volumes"]
    return next(v for v in volumes if v["name"] == volume)["persistentVolumeClaim"]


def test_gpu_overlay_gives_each_worker_one_gpu() -> None:
    base, gpu = render("k8s/base"), render("k8s/overlays/gpu")
    assert "nvidia.com/gpu" not in str(base)
    worker = find(gpu, "Deployment", "worker")
    c = container(worker)
    assert c["image"].startswith("resnet-serve-worker-cuda:")
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    tolerations = worker["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    # Nothing is built at pod start: loading and warming fit base's startup probe.
    assert c["startupProbe"] == container(find(base, "Deployment", "worker"))["startupProbe"]
    # Everything of base but the worker is the same; the overlay adds the build Job.
    added = {(d["kind"], d["metadata"]["name"]) for d in gpu if d not in base}
    assert added == {
        ("Deployment", "worker"),
        ("Job", "build-model-repository"),
        ("PersistentVolumeClaim", "model-repository"),
    }


def test_gpu_workers_serve_what_one_job_built() -> None:
    """The Job builds the GPU artifact once, on a GPU, into the volume every worker mounts
    read-only at its model repository; a worker's init container waits for it."""
    docs = render("k8s/overlays/gpu")
    job = find(docs, "Job", "build-model-repository")
    build = container(job, "build")
    worker = find(docs, "Deployment", "worker")
    serve = container(worker)
    (wait,) = worker["spec"]["template"]["spec"]["initContainers"]
    assert build["command"] == ["resnet-serve", "export"]
    assert wait["command"][:3] == ["resnet-serve", "models", "--wait-s"]
    assert float(wait["command"][3]) >= job["spec"]["activeDeadlineSeconds"]
    for c in (build, wait):
        assert command_problems(c["command"]) == []
        assert c["image"] == serve["image"]
        assert env_value(c, "RESNET_SERVE_MODEL") == env_value(serve, "RESNET_SERVE_MODEL")
    assert build["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (
        job["spec"]["template"]["spec"]["tolerations"]
        == worker["spec"]["template"]["spec"]["tolerations"]
    )
    pvc = find(docs, "PersistentVolumeClaim", "model-repository")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]  # workers on several nodes
    for workload, c, writes in ((job, build, True), (worker, wait, False), (worker, serve, False)):
        repository = env_value(c, "RESNET_SERVE_MODEL_REPOSITORY")
        mount = mounts(c)[repository]
        assert claim(workload, mount["name"])["claimName"] == "model-repository"
        assert mount.get("readOnly", False) is not writes
    assert claim(worker, "model-repository")["readOnly"] is True
    # The CUDA image's HOME_DIR (liveness file) stays writable on a read-only root.
    assert "/var/cache/resnet-serve" in mounts(serve)


def scaled_objects(docs: tuple[Doc, ...]) -> list[Doc]:
    return [d for d in docs if d["kind"] == "ScaledObject"]


@pytest.mark.parametrize("kustomization", EVERY_KUSTOMIZATION)
def test_each_models_workers_scale_on_that_models_signal(kustomization: str) -> None:
    docs = render(kustomization)
    for scaled in scaled_objects(docs):
        target = find(docs, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
        model = env_value(container(target, "worker"), "RESNET_SERVE_MODEL")
        [trigger] = scaled["spec"]["triggers"]
        assert trigger["metadata"]["query"] == KEDA_QUERY.replace("resnet18", model)
        assert pod_labels(target)["resnet-serve/model"] == model
    # One Prometheus address, set in one place (k8s/base/worker/kustomization.yaml).
    addresses = {
        s["spec"]["triggers"][0]["metadata"]["serverAddress"]
        for k in EVERY_KUSTOMIZATION
        for s in scaled_objects(render(k))
    }
    assert addresses == {"http://prometheus-operated.monitoring.svc:9090"}


def test_a_second_models_workers_stand_beside_the_first() -> None:
    base, extra = render("k8s/base"), render("k8s/overlays/efficientnet-lite0")
    worker = find(extra, "Deployment", "worker-efficientnet-lite0")
    c = container(worker, "worker")
    assert env_value(c, "RESNET_SERVE_MODEL") == "efficientnet_lite0"
    assert c["image"] == "resnet-serve-worker-cpu:0.1.0-efficientnet-lite0"
    assert command_problems(c["command"]) == []
    names = {(d["kind"], d["metadata"]["name"]) for d in base}
    assert not names & {(d["kind"], d["metadata"]["name"]) for d in extra}
    # Each model's Service, disruption budget and Deployment select that model's pods
    # only; the ServiceMonitor, and Redis's NetworkPolicy, select both.
    everything = base + extra
    pods = {w["metadata"]["name"]: pod_labels(w) for w in workloads(everything)}
    for doc in everything:
        selector = {
            "Service": lambda d: {"matchLabels": d["spec"]["selector"]},
            "PodDisruptionBudget": lambda d: d["spec"]["selector"],
            "Deployment": lambda d: d["spec"]["selector"],
        }.get(doc["kind"])
        if selector is not None:
            chosen = [n for n, labels in pods.items() if selects(selector(doc), labels)]
            assert len(chosen) == 1, (doc["kind"], doc["metadata"]["name"], chosen)
    policy = find(base, "NetworkPolicy", "redis-clients-only")["spec"]
    sources = [peer["podSelector"] for rule in policy["ingress"] for peer in rule["from"]]
    assert any(selects(s, pod_labels(worker)) for s in sources)
    monitor = find(base, "ServiceMonitor", "worker")["spec"]["selector"]
    metrics = find(extra, "Service", "worker-metrics-efficientnet-lite0")
    assert selects(monitor, metrics["metadata"]["labels"])


def test_only_service_pods_reach_redis() -> None:
    docs = render("k8s/base")
    policy = find(docs, "NetworkPolicy", "redis-clients-only")["spec"]
    redis = find(docs, "StatefulSet", "redis")
    assert selects(policy["podSelector"], pod_labels(redis))
    assert policy["policyTypes"] == ["Ingress"]
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [6379]
    sources = [peer["podSelector"] for rule in policy["ingress"] for peer in rule["from"]]
    assert all(set(peer) == {"podSelector"} for r in policy["ingress"] for peer in r["from"])
    allowed = {
        w["metadata"]["name"]
        for w in workloads(docs)
        if any(selects(s, pod_labels(w)) for s in sources)
    }
    assert allowed == set(SERVICE_COMPONENTS)
    # Anything else in the namespace (say, a debug pod) is not let in.
    assert not any(selects(s, {"app.kubernetes.io/name": "resnet-serve"}) for s in sources)
    # Redis's password comes from the Secret, never from the manifests.
    secret_refs = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for w in workloads(docs)
        for c in w["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert secret_refs == {("resnet-serve-redis", "password")}
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_services_budgets_and_monitors_select_real_pods() -> None:
    docs = render("k8s/base")
    pods = {w["metadata"]["name"]: w for w in workloads(docs)}

    def targets(selector: dict[str, Any]) -> set[str]:
        return {name for name, w in pods.items() if selects(selector, pod_labels(w))}

    for service in (d for d in docs if d["kind"] == "Service"):
        selected = targets({"matchLabels": service["spec"]["selector"]})
        assert len(selected) == 1, service["metadata"]["name"]
        port_names = {
            p["name"]
            for c in pods[selected.pop()]["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    budgets = {
        d["metadata"]["name"]: targets(d["spec"]["selector"])
        for d in docs
        if d["kind"] == "PodDisruptionBudget"
    }
    assert budgets == {"gateway": {"gateway"}, "worker": {"worker"}}
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        services = [
            s
            for s in docs
            if s["kind"] == "Service"
            and selects(monitor["spec"]["selector"], s["metadata"]["labels"])
        ]
        assert len(services) == 1, monitor["metadata"]["name"]
        service_ports = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in service_ports
            assert endpoint["path"] == "/metrics"


def test_autoscalers() -> None:
    docs = render("k8s/base")
    hpa = find(docs, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert hpa["minReplicas"] >= 2
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    scaled = find(docs, "ScaledObject", "worker")["spec"]
    assert find(docs, "Deployment", scaled["scaleTargetRef"]["name"])
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    # threshold 1 with AverageValue: replicas = workers_needed.
    assert trigger["metadata"]["query"] == KEDA_QUERY
    assert trigger["metadata"]["threshold"] == "1"
    assert "resnet_serve_workers_needed" in METRICS
    # Autoscaled Deployments leave `replicas` to their autoscaler.
    for name in ("gateway", "worker"):
        assert "replicas" not in find(docs, "Deployment", name)["spec"]


def test_grafana_sidecar_gets_the_dashboards_compose_mounts() -> None:
    dashboards = ROOT / "deploy/grafana/dashboards"
    config_map = find(render("k8s/base"), "ConfigMap", "grafana-dashboards")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {p.name: json.loads(p.read_text()) for p in dashboards.glob("*.json")}
    assert files
    assert {k: json.loads(v) for k, v in config_map["data"].items()} == files
