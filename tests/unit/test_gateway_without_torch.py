"""The gateway never imports torch: a gateway-only install stays slim."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys, pkgutil, importlib
import resnet_serve.api as api, resnet_serve.shared as shared, resnet_serve.cli as cli
import resnet_serve.client as client
for package in (api, shared, cli, client):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
from resnet_serve.api.app import create_app
from resnet_serve.api.broker.redis_broker import RedisBroker
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.settings import load_settings

settings, metrics = load_settings(), Metrics()
app = create_app(settings, RedisBroker(settings, metrics), metrics)  # connects to nothing
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "onnxruntime"))
print(",".join(heavy))
"""


def test_gateway_modules_do_not_import_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
