"""KServe's own Python client (`kserve.InferenceGRPCClient`, asyncio) against a real
server's gRPC port, from a fresh venv of its own: kserve and tritonclient register the
same protocol messages under the same names, so one process cannot import both
(kserve/kserve#3099)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from tests.images import jpeg
from tests.installs.conftest import fresh_venv
from tests.servers import Server

pytestmark = pytest.mark.slow

KSERVE = "kserve==0.21.0"
MODEL = "efficientnet_lite0"

CLIENT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

target, model, photo = sys.argv[1:4]

async def main():
    async with InferenceGRPCClient(target, timeout=60) as client:
        ready = await client.is_server_ready() and await client.is_model_ready(model)
        images = InferInput("images", [1], "BYTES")
        images.set_data_from_numpy(np.array([open(photo, "rb").read()], dtype=np.object_))
        result = await client.infer(InferRequest(model, [images], request_id="k-1"))
        row = result.get_output_by_name("probabilities").as_numpy()[0]
        print(json.dumps({"ready": ready, "id": result.id, "scores": row.tolist()}))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def kserve_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_venv(tmp_path_factory.mktemp("kserve-venv"), KSERVE, byte_compile=False)


def test_kserve_grpc_client_gets_the_answers_tritonclient_gets(
    kserve_venv: Path, lite_server: Server, tmp_path: Path
) -> None:
    photo = tmp_path / "chelsea.jpg"
    photo.write_bytes(jpeg("chelsea"))
    done = subprocess.run(
        [
            str(kserve_venv / "bin" / "python"),
            "-c",
            CLIENT,
            lite_server.grpc_target,
            MODEL,
            str(photo),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["ready"] is True
    assert answer["id"] == "k-1"
    client = triton.InferenceServerClient(lite_server.grpc_target)
    try:
        images = triton.InferInput("images", [1], "BYTES")
        images.set_data_from_numpy(np.array([photo.read_bytes()], dtype=np.object_))
        want = client.infer(MODEL, [images]).as_numpy("probabilities")[0]
    finally:
        client.close()
    got = np.asarray(answer["scores"], dtype=np.float32)
    assert got.shape == (1000,)
    assert list(np.argsort(got)[::-1][:5]) == list(np.argsort(want)[::-1][:5])
    np.testing.assert_allclose(got, want, atol=1e-6)
