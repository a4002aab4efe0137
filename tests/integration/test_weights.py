"""Weights resolution: explicit path -> cache -> torch hub cache -> sha256-checked download."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from resnet_serve.worker.model.catalog import WeightsSource, get_spec
from resnet_serve.worker.model.weights import WeightsCorrupt, WeightsNotFound, resolve_weights
from tests.servers import server_env


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _checkpoint(directory: Path, stem: str) -> tuple[Path, WeightsSource]:
    """A real state dict saved under a torchvision-style name carrying its sha256 prefix."""
    directory.mkdir(parents=True, exist_ok=True)
    scratch = directory / "scratch.pth"
    torch.save(torch.nn.Linear(4, 2).state_dict(), scratch)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()
    path = directory / f"{stem}-{digest[:8]}.pth"
    scratch.rename(path)
    return path, WeightsSource(filename=path.name, url=None)


def _spec_with(source: WeightsSource):  # type: ignore[no-untyped-def]
    return dataclasses.replace(get_spec("resnet18"), weights=source)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback, serving a directory: a weights mirror."""
    root = tmp_path / "mirror"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_random_is_explicit_and_loud(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    assert resolve_weights(get_spec("resnet18"), "random", tmp_path) is None
    assert "RANDOM weights" in caplog.text


def test_explicit_path_wins(tmp_path: Path, torch_home: Path) -> None:
    path, source = _checkpoint(tmp_path / "anywhere", "mine")
    assert resolve_weights(_spec_with(source), str(path), tmp_path / "cache") == path


def test_explicit_path_that_does_not_exist_fails(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound, match="does not exist"):
        resolve_weights(get_spec("resnet18"), str(tmp_path / "nope.pth"), tmp_path)


def test_cache_then_torch_hub(tmp_path: Path, torch_home: Path) -> None:
    hub_file, source = _checkpoint(torch_home / "hub" / "checkpoints", "net")
    spec = _spec_with(source)
    cache = tmp_path / "cache"
    assert resolve_weights(spec, None, cache, offline=True) == hub_file
    cache.mkdir()
    cached = cache / hub_file.name
    cached.write_bytes(hub_file.read_bytes())
    assert resolve_weights(spec, None, cache, offline=True) == cached


def test_a_cached_file_with_the_wrong_hash_is_not_used(tmp_path: Path, torch_home: Path) -> None:
    _, source = _checkpoint(tmp_path / "src", "net")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / source.filename).write_bytes(b"not the checkpoint")
    with pytest.raises(WeightsNotFound):
        resolve_weights(_spec_with(source), None, cache, offline=True)


def test_download_from_a_mirror_is_sha256_checked(
    tmp_path: Path, torch_home: Path, file_server: tuple[str, Path]
) -> None:
    url, root = file_server
    original, source = _checkpoint(root, "net")
    cache = tmp_path / "cache"
    got = resolve_weights(_spec_with(source), None, cache, mirror_url=url)
    assert got == cache / source.filename
    assert got.read_bytes() == original.read_bytes()


def test_a_download_with_the_wrong_hash_is_discarded(
    tmp_path: Path, torch_home: Path, file_server: tuple[str, Path]
) -> None:
    url, root = file_server
    _, source = _checkpoint(tmp_path / "src", "net")
    (root / source.filename).write_bytes(b"tampered" * 1000)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsCorrupt, match="does not match"):
        resolve_weights(_spec_with(source), None, cache, mirror_url=url)
    assert not any(cache.iterdir())


def test_offline_without_weights_names_every_way_to_supply_them(
    tmp_path: Path, torch_home: Path
) -> None:
    with pytest.raises(WeightsNotFound) as raised:
        resolve_weights(get_spec("resnet18"), None, tmp_path / "cache", offline=True)
    message = str(raised.value)
    for way in ("--weights", "RESNET_SERVE_WEIGHTS", str(tmp_path / "cache"), "hub", "random"):
        assert way in message
    assert "resnet18-f37072fd.pth" in message


def test_serve_exits_non_zero_with_the_message_when_no_weights(tmp_path: Path) -> None:
    env = server_env(tmp_path / "home")
    env["TORCH_HOME"] = str(tmp_path / "torch-home")
    result = subprocess.run(
        [sys.executable, "-m", "resnet_serve", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "--weights random" in result.stderr
    assert "resnet18-f37072fd.pth" in result.stderr
