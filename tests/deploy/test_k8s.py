"""k8s/: every rendered manifest validated offline, and the wiring between them checked
against the code (CLI commands, settings, metric names) and against each other."""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pydantic
import pytest
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

from tests.deploy.contract import (
    METRICS,
    command_problems,
    setting_default,
    setting_env_names,
)
from tests.deploy.k8s import (
    KUSTOMIZATIONS,
    Doc,
    container,
    env_value,
    find,
    pod_labels,
    render,
    selects,
    workloads,
)

# Built-in kinds against the oldest Kubernetes we support and the newest schema known.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
# Custom resources: kubernetes-validate has no CRD schemas, so these are validated with
# pydantic models generated from the KEDA 2.16 and Prometheus Operator 0.80 CRDs.
CRD_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "ScaledObject": ScaledObject,
    "ServiceMonitor": ServiceMonitor,
}
SERVICE_COMPONENTS = ("gateway", "worker", "jobs-worker")
KEDA_QUERY = 'max(resnet_serve_workers_needed{model="resnet18"})'


def validate_custom_resource(doc: Doc) -> None:
    """Validate against the CRD model; a field the CRD does not know is an error too
    (the models ignore unknown fields, so compare the round trip)."""
    model = CRD_MODELS[doc["kind"]].model_validate(doc)
    back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert back == doc, f"{doc['kind']}/{doc['metadata']['name']} has fields its CRD lacks"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_manifest_is_valid(kustomization: str) -> None:
    docs = render(kustomization)
    assert len(docs) >= 15
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
    scaled = copy.deepcopy(find(docs, "ScaledObject", "worker"))
    scaled["spec"]["minReplicaCounts"] = 0
    with pytest.raises(AssertionError, match="fields its CRD lacks"):
        validate_custom_resource(scaled)
    scaled = copy.deepcopy(find(docs, "ScaledObject", "worker"))
    scaled["spec"]["maxReplicaCount"] = "many"
    with pytest.raises(pydantic.ValidationError):
        validate_custom_resource(scaled)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_are_locked_down(kustomization: str) -> None:
    for workload in workloads(render(kustomization)):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in pod["containers"]:
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
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
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
    # The GPU artifact is built at start: a writable model cache, and time to build it.
    assert {"name": "model-cache", "mountPath": "/var/cache/resnet-serve"} in c["volumeMounts"]
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 300
    # Everything but the worker is the same as in base.
    others = [d for d in gpu if d["metadata"]["name"] != "worker" or d["kind"] != "Deployment"]
    assert len(others) == len(base) - 1
    assert all(d in base for d in others)


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
