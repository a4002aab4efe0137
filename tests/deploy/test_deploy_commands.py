"""The deploy commands the docs print, each checked by the validator it stands for (there
is no Docker engine or cluster here): `kubectl apply -k DIR` renders with `kubectl
kustomize DIR`; `docker compose --profile P up ... --scale S=N` resolves with `docker
compose --profile P config`, and S is a service of that profile; `docker build -f F
--build-arg A=...` names a Dockerfile and its ARGs. Commands are read from
docs/deploy.md's code blocks and from the headers of the files they deploy."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.deploy.dockerfiles import Dockerfile
from tests.deploy.k8s import render
from tests.deploy.tools import ROOT, tool

SECRETS = {"REDIS_PASSWORD": "0123abcd" * 4, "GRAFANA_ADMIN_PASSWORD": "grafana-test-pw"}
HEADERS = (
    ROOT / "docker-compose.yml",
    *sorted((ROOT / "deploy").glob("Dockerfile.*")),
    *sorted((ROOT / "k8s").rglob("kustomization.yaml")),
)


def _logical_lines(lines: list[str]) -> list[str]:
    """Lines with their backslash continuations joined."""
    joined, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return joined


def _from_markdown(path: Path) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)
    return [line for block in blocks for line in _logical_lines(block.splitlines())]


def _from_header(path: Path) -> list[str]:
    """Commands shown in a file's comments: `#   docker ...` / `#   kubectl ...`."""
    lines = [m.group(1) for m in re.finditer(r"^#\s+(.*)$", path.read_text(), re.M)]
    return _logical_lines(lines)


def commands() -> list[tuple[str, list[str]]]:
    found = []
    sources = [(ROOT / "docs/deploy.md", _from_markdown(ROOT / "docs/deploy.md"))]
    sources += [(path, _from_header(path)) for path in HEADERS]
    for path, lines in sources:
        for line in lines:
            if not re.match(r"\s*(docker|kubectl) ", line):
                continue
            argv = shlex.split(line.replace("$(", "").replace(")", ""), comments=True)
            found.append((f"{path.relative_to(ROOT)}: {line.strip()}", argv))
    return found


COMMANDS = commands()


def of(*prefix: str) -> list[tuple[str, list[str]]]:
    return [(where, argv) for where, argv in COMMANDS if argv[: len(prefix)] == list(prefix)]


def option_values(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == name]


@pytest.mark.parametrize(("where", "argv"), of("kubectl", "apply"), ids=lambda v: str(v)[:60])
def test_kubectl_apply_renders(where: str, argv: list[str]) -> None:
    (directory,) = option_values(argv, "-k")
    assert (ROOT / directory / "kustomization.yaml").is_file(), where
    assert render(directory), where


def compose_services(profiles: list[str]) -> set[str]:
    flags = [word for p in profiles for word in ("--profile", p)]
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    result = subprocess.run(
        [
            tool("docker-compose"),
            "-f",
            str(ROOT / "docker-compose.yml"),
            *flags,
            "config",
            "--services",
        ],
        cwd=ROOT,
        env=clean | SECRETS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize(("where", "argv"), of("docker", "compose"), ids=lambda v: str(v)[:60])
def test_compose_commands_name_services_of_their_profiles(where: str, argv: list[str]) -> None:
    services = compose_services(option_values(argv, "--profile"))
    for scale in option_values(argv, "--scale"):
        service = scale.split("=")[0]
        assert service in services, f"{where}: no service {service!r} in {sorted(services)}"


@pytest.mark.parametrize(("where", "argv"), of("docker", "build"), ids=lambda v: str(v)[:60])
def test_docker_builds_name_real_dockerfiles_and_args(where: str, argv: list[str]) -> None:
    (path,) = option_values(argv, "-f")
    dockerfile = Dockerfile(ROOT / path)
    for arg in option_values(argv, "--build-arg"):
        assert arg.split("=")[0] in dockerfile.args, where


def test_the_docs_deploy_every_shape() -> None:
    applied = {option_values(argv, "-k")[0] for _, argv in of("kubectl", "apply")}
    assert {"k8s/base", "k8s/overlays/gpu", "k8s/overlays/efficientnet-lite0"} <= applied
    profiles = {p for _, argv in of("docker", "compose") for p in option_values(argv, "--profile")}
    assert profiles == {"cpu", "gpu"}
    assert any("--scale" in argv for _, argv in of("docker", "compose"))
    built = {option_values(argv, "-f")[0] for _, argv in of("docker", "build")}
    assert built == {f"deploy/{p.name}" for p in (ROOT / "deploy").glob("Dockerfile.*")}


def test_a_wrong_command_fails() -> None:
    """The checks above can fail: a profile without the service, a missing folder."""
    assert "worker" not in compose_services(["cpu"])
    assert "worker-cpu" in compose_services(["cpu"])
    with pytest.raises(AssertionError):
        render("k8s/overlays/no-such-overlay")
