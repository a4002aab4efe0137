"""Render the kustomizations with the real kubectl and look into the result."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import yaml

from tests.deploy.tools import ROOT, run

Doc = dict[str, Any]
# The two complete deployments: CPU workers, or GPU workers.
KUSTOMIZATIONS = ("k8s/base", "k8s/overlays/gpu")
# Every kustomization under k8s/ (the worker folder and a second model's workers too),
# components excepted: each must render and validate.
EVERY_KUSTOMIZATION = tuple(
    str(path.parent.relative_to(ROOT))
    for path in sorted((ROOT / "k8s").rglob("kustomization.yaml"))
    if yaml.safe_load(path.read_text())["kind"] == "Kustomization"
)
WORKLOADS = ("Deployment", "StatefulSet", "Job")
# The commands that run a gateway (HTTP and gRPC): distributed, or standalone.
GATEWAY_COMMANDS = (["resnet-serve", "api"], ["resnet-serve", "serve"])


@cache
def render(kustomization: str) -> tuple[Doc, ...]:
    """`kubectl kustomize`, as `kubectl apply -k` would build it."""
    output = run("kubectl", "kustomize", str(ROOT / kustomization))
    return tuple(doc for doc in yaml.safe_load_all(output) if doc)


def find(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def workloads(docs: tuple[Doc, ...]) -> Iterator[Doc]:
    return (d for d in docs if d["kind"] in WORKLOADS)


def pod_containers(workload: Doc) -> list[Doc]:
    """Init containers and containers."""
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def container(workload: Doc, name: str | None = None) -> Doc:
    containers = workload["spec"]["template"]["spec"]["containers"]
    name = name or workload["metadata"]["name"]
    return next(c for c in containers if c["name"] == name)


def gateway_containers(docs: tuple[Doc, ...]) -> Iterator[tuple[Doc, Doc]]:
    """(workload, container) for every container that runs a gateway."""
    for workload in workloads(docs):
        for c in workload["spec"]["template"]["spec"]["containers"]:
            if c.get("command", [])[:2] in GATEWAY_COMMANDS:
                yield workload, c


def container_port(container_spec: Doc, name: str) -> int:
    return int(next(p["containerPort"] for p in container_spec["ports"] if p["name"] == name))


def env_value(container_spec: Doc, name: str) -> str:
    return next(e["value"] for e in container_spec.get("env", []) if e["name"] == name)


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def pod_labels(workload: Doc) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def selecting(docs: tuple[Doc, ...], kind: str, workload: Doc) -> list[Doc]:
    """The Services or NetworkPolicies whose selector picks the workload's pods."""
    labels = pod_labels(workload)
    selector = {
        "Service": lambda d: {"matchLabels": d["spec"]["selector"]},
        "NetworkPolicy": lambda d: d["spec"]["podSelector"],
    }[kind]
    return [d for d in docs if d["kind"] == kind and selects(selector(d), labels)]
