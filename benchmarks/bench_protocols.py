"""The gateway's protocols against each other in one run, same images, one load generator:
REST multipart (/v1/classify, top-3 JSON), REST KServe v2 binary, gRPC ModelInfer and
ModelStreamInfer (a JPEG as a BYTES element; the top-3 classification strings back, the
answer /v1 gives), served by a
private Redis, one worker (OpenVINO INT8, random weights; ONNX Runtime if it refuses) and
one `api` gateway, response cache off. The load generator, a process of its own, runs N
asyncio clients in a closed loop over one httpx.AsyncClient or one grpc.aio channel (N
streams when streaming). The machine is shared and noisy: compare rows of one run only.

    python -m benchmarks.bench_protocols            # c=1, 8, 32; ~6 minutes
    python -m benchmarks.bench_protocols --quick    # smoke run, ~1.5 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import re
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, asynccontextmanager, contextmanager
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np

from benchmarks.harness.console import log
from benchmarks.harness.cpu import CpuSample, NoiseMeter, cpu_seconds
from benchmarks.harness.images import ImageSet, camera_sized, imagenet_sized
from benchmarks.harness.load import percentiles_ms
from benchmarks.harness.report import Check, write_results
from resnet_serve.api.grpc.protocol import pb, rpc
from resnet_serve.api.kserve.codec import pack_bytes
from tests.cluster import MODEL, gateway, workers
from tests.images import jpeg
from tests.redis_server import run_redis
from tests.servers import Server, resnet_serve, server_env

PROTOCOLS = ("REST multipart", "REST KServe binary", "gRPC unary", "gRPC stream")
SETTINGS = {"response_cache_entries": "0", "log_level": "warning"}
INT8 = ("--weights", "random", "--engine", "openvino", "--precision", "int8")
TIMEOUT_S = 60.0
BOUNDARY, OCTETS = "bench-protocols-boundary", "application/octet-stream"
_GENERATOR: dict[str, Any] = {}  # in the generator process: image sets and event loop
Send = Callable[[Any], Awaitable[str]]  # "" when answered, else what went wrong
ROW = (
    "| {image_set} | {protocol} | {concurrency} | {req_per_s:.1f} | {p50_ms:.1f} | {p99_ms:.1f} "
    "| {n_errors} | {gateway_cpu_ms_per_req:.2f} | {generator_cpu_ms_per_req:.2f} "
    "| {generator_cores:.2f}{bound} | {other_cores:.2f} |"
)


def multipart(image: bytes) -> tuple[str, bytes, dict[str, str]]:
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"'
    body = f"{part}\r\nContent-Type: image/jpeg\r\n\r\n".encode() + image
    media = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    return "/v1/classify", body + f"\r\n--{BOUNDARY}--\r\n".encode(), media


def kserve(image: bytes, classes: int = 3) -> tuple[str, bytes, dict[str, str]]:
    """KServe v2 with the binary extension: the image as a BYTES element, the top
    `classes` back (0: the FP32 probabilities)."""
    blob = pack_bytes([image])
    tensor = {"name": "images", "datatype": "BYTES", "shape": [1]}
    inputs = [{**tensor, "parameters": {"binary_data_size": len(blob)}}]
    wanted = {"binary_data": True} | ({"classification": classes} if classes else {})
    outputs = [{"name": "probabilities", "parameters": wanted}]
    text = json.dumps({"inputs": inputs, "outputs": outputs}).encode()
    media = {"inference-header-content-length": str(len(text)), "content-type": OCTETS}
    return f"/v2/models/{MODEL}/infer", text + blob, media


def infer_request(image: bytes, classes: int = 3) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="images", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(pack_bytes([image]))
    if classes:
        output = request.outputs.add(name="probabilities")
        output.parameters["classification"].int64_param = classes
    return request


ENCODERS = dict(zip(PROTOCOLS, (multipart, kserve, infer_request, infer_request), strict=True))


@asynccontextmanager
async def connect(spec: dict[str, Any]) -> AsyncIterator[Callable[[], Send]]:
    """One httpx client or gRPC channel; yields what each client calls for its `send`."""
    n = spec["concurrency"]
    if spec["protocol"].startswith("REST"):
        pool = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=spec["url"], limits=pool, timeout=TIMEOUT_S) as http:
            yield lambda: partial(post, http)
        return
    async with grpc.aio.insecure_channel(spec["grpc_target"]) as channel:
        stub = rpc.GRPCInferenceServiceStub(channel)
        if spec["protocol"] == "gRPC unary":
            yield lambda: partial(unary, stub)
            return
        lifetime_s = spec["warmup_s"] + spec["duration_s"] + TIMEOUT_S
        yield lambda: partial(streamed, stub.ModelStreamInfer(timeout=lifetime_s))


async def post(http: httpx.AsyncClient, request: tuple[str, bytes, dict[str, str]]) -> str:
    path, body, headers = request
    status = (await http.post(path, content=body, headers=headers)).status_code
    return "" if status == 200 else f"HTTP {status}"


async def unary(stub: rpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest) -> str:
    await stub.ModelInfer(request, timeout=TIMEOUT_S)
    return ""


async def streamed(call: Any, request: pb.ModelInferRequest) -> str:
    """One request on a stream of its own, answered before the next (closed loop)."""
    await call.write(request)
    answer = await call.read()
    return "stream ended" if answer is grpc.aio.EOF else answer.error_message


async def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    payloads = [ENCODERS[spec["protocol"]](x) for x in _GENERATOR[spec["image_set"]]]
    meter = NoiseMeter(threshold_cores=0.0, max_wait_s=0.0)  # a meter, no waiting
    done: list[tuple[float, float, str]] = []  # (answered at, latency, error)
    begin = time.perf_counter() + spec["warmup_s"]
    stop = begin + spec["duration_s"]

    async def window() -> list[tuple[CpuSample, float, float]]:
        marks = []
        for at in (begin, stop):
            await asyncio.sleep(at - time.perf_counter())
            sample = meter.sample()  # the machine's CPU, all this benchmark's processes as own
            own = sample.own_s + sum(cpu_seconds(pid) for pid in (spec["pid"], *spec["others"]))
            sample = dataclasses.replace(sample, own_s=own)
            marks.append((sample, cpu_seconds(spec["pid"]), time.process_time()))
        return marks

    async def client(opener: Callable[[], Send], n: int) -> None:
        send = opener()
        while time.perf_counter() < stop:
            start = time.perf_counter()
            try:
                error = await send(payloads[n % len(payloads)])
            except grpc.aio.AioRpcError as exc:
                error, send = f"gRPC {exc.code().name}", opener()  # a broken stream
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            n, now = n + 1, time.perf_counter()
            done.append((now, now - start, error))

    async with connect(spec) as opener:
        marks = asyncio.create_task(window())
        await asyncio.gather(*(client(opener, 7 * i) for i in range(spec["concurrency"])))
        (a, gateway_a, mine_a), (b, gateway_b, mine_b) = await marks
    counted = [(latency, error) for at, latency, error in done if a.wall <= at <= b.wall]
    latencies = [latency for latency, error in counted if not error]
    ok, seconds, cpu = len(latencies), b.wall - a.wall, mine_b - mine_a
    cores = cpu / seconds  # the generator's utilisation
    per_request = 1000 / ok if ok else float("nan")
    p50, _, p99 = percentiles_ms(latencies)
    cell = {key: spec[key] for key in ("image_set", "protocol", "concurrency")}
    cell |= {"seconds": seconds, "requests": ok, "req_per_s": ok / seconds, "p50_ms": p50}
    cell |= {"p99_ms": p99, "errors": dict(Counter(e for _, e in counted if e))}
    cell |= {"gateway_cpu_ms_per_req": (gateway_b - gateway_a) * per_request}
    cell |= {"generator_cpu_ms_per_req": cpu * per_request, "generator_cores": cores}
    return cell | {"generator_bound": cores >= 0.9, "other_cores": meter.foreign_cores(a, b)}


def adopt_images(image_sets: dict[str, list[bytes]]) -> None:
    """The generator process's initializer: the images, and one event loop for all."""
    _GENERATOR.update(image_sets, runner=asyncio.Runner())


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """In the generator process: one cell, with clients of its own."""
    return _GENERATOR["runner"].run(_measure(spec))


@contextmanager
def service(work: Path) -> Iterator[tuple[Server, str, list[int]]]:
    """Redis, a worker (INT8 unless refused), a gateway: it, what is served, other pids."""
    # As tests/conftest.py builds it: few calibration crops, the gate's minimum held out.
    export = resnet_serve("export", *INT8, "--calibration-crops", "16", "--holdout-crops", "300")
    subprocess.run(export, env=server_env(work), check=True, capture_output=True)
    with ExitStack() as stack:
        redis = stack.enter_context(run_redis(work / "redis"))
        try:
            (worker,) = stack.enter_context(workers(work, work, redis, "w", args=INT8, **SETTINGS))
        except (AssertionError, TimeoutError) as exc:  # it exited, or never announced itself
            log(f"the worker refused INT8, falling back to ONNX Runtime:\n{str(exc)[-800:]}")
            onnx = (*INT8[:3], "onnxruntime")
            (worker,) = stack.enter_context(workers(work, work, redis, "w", args=onnx, **SETTINGS))
        server = stack.enter_context(gateway(work, work, redis, **SETTINGS))
        m = httpx.get(f"{server.url}/v1/models", timeout=10).json()[0]
        gate = m["accuracy_gate_passed"]
        served = f"{m['engine']} {m['precision']} (accuracy gate passed: {gate})"
        assert redis.process is not None
        yield server, served, [worker.process.pid, redis.process.pid]


def answers_equal(server: Server) -> list[str]:
    """gRPC's probabilities against REST KServe's for three photos, one per request."""
    lines = ["Answers equal, gRPC vs REST KServe (top-5 equal, max |diff| <= 1e-6):"]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = rpc.GRPCInferenceServiceStub(channel)
        for name in ("chelsea", "coffee", "rocket"):
            answer = stub.ModelInfer(infer_request(jpeg(name), 0), timeout=TIMEOUT_S)
            got = np.frombuffer(answer.raw_output_contents[0], "<f4")
            path, body, headers = kserve(jpeg(name), 0)
            rest = httpx.post(server.url + path, content=body, headers=headers, timeout=TIMEOUT_S)
            start = int(rest.raise_for_status().headers["inference-header-content-length"])
            want = np.frombuffer(rest.content[start:], "<f4")
            top5 = [np.argsort(x)[::-1][:5].tolist() for x in (got, want)]
            diff = float(np.abs(got - want).max())
            verdict = "PASS" if top5[0] == top5[1] and diff <= 1e-6 else "MISS"
            lines.append(f"- {name}: top-5 {top5[0]} / {top5[1]}, max diff {diff:.1e}: {verdict}")
    return lines


def checks(cells: list[dict[str, Any]], low: int, high: int) -> list[Check]:
    """The issue's targets, gRPC against REST multipart, ImageNet-sized images."""
    found = {
        (x["protocol"], x["concurrency"]): x for x in cells if x["image_set"] == "ImageNet-sized"
    }
    figures = (("req_per_s", high), ("p50_ms", low), ("gateway_cpu_ms_per_req", high))
    out = []
    for mode, (figure, c) in itertools.product(PROTOCOLS[2:], figures):
        mine, rest = found.get((mode, c)), found.get((PROTOCOLS[0], c))
        if mine and rest:
            ratio = mine[figure] / (rest[figure] or float("nan"))
            name, higher = f"{mode} / REST multipart, {figure} at c={c}", figure == "req_per_s"
            out.append(Check(name, ratio, 1.0, higher))
    return out


def render(run: dict[str, Any], args: argparse.Namespace) -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    cpu = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
    images = "; ".join(f"{title}: {about}" for title, about in run["images"].items())
    lines = [
        f"## resnet-serve protocols: {cpu.group(1).strip() if cpu else 'unknown CPU'}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"- 1 worker asked for openvino int8, serving {run['served']}, random weights; "
        "1 gateway, response cache off",
        f"- images: {images}; {args.warmup_s:g} s warm-up, {args.duration_s:g} s per cell; "
        "'other cores': CPU used by processes not this benchmark's",
        "",
        "| images | protocol | conc | req/s | p50 ms | p99 ms | errors | gateway CPU ms/req "
        "| generator CPU ms/req | generator cores | other cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in run["cells"]:
        bound = " **generator-bound**" if x["generator_bound"] else ""
        lines.append(ROW.format(**x, bound=bound, n_errors=sum(x["errors"].values())))
    lines += ["", *run["answers"], "", "| ratio | measured | target | |", "|---|---:|---:|---|"]
    return "\n".join(lines + [check.row() for check in run["checks"]])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short cells, c=1 and 32 only")
    parser.add_argument("--concurrency", type=int, nargs="+", help="default 1 8 32")
    parser.add_argument("--duration-s", type=float, help="measured seconds per cell")
    args = parser.parse_args(argv)
    concurrency = args.concurrency = args.concurrency or ([1, 32] if args.quick else [1, 8, 32])
    args.duration_s = args.duration_s or (2.0 if args.quick else 10.0)
    args.warmup_s = 1.0 if args.quick else 2.0
    n = 16 if args.quick else 48
    camera = ImageSet("camera", "3000x2000", camera_sized(n // 4))
    sets = [ImageSet("imagenet", "ImageNet-sized", imagenet_sized(n)), camera]
    images, spawn = {s.title: s.images for s in sets}, get_context("spawn")
    generator = ProcessPoolExecutor(1, spawn, initializer=adopt_images, initargs=(images,))
    tmp = tempfile.TemporaryDirectory(prefix="bench-protocols-")
    with tmp, generator, service(Path(tmp.name)) as (server, served, pids):
        log(f"serving {served}")
        run: dict[str, Any] = {"served": served, "answers": answers_equal(server), "cells": []}
        base = {"url": server.url, "grpc_target": server.grpc_target, "pid": server.pid}
        base |= {"others": pids, "warmup_s": args.warmup_s, "duration_s": args.duration_s}
        # Protocols side by side at each concurrency: drift in the machine's load
        # touches neighbours alike.
        for key, c, protocol in itertools.product(images, concurrency, PROTOCOLS):
            spec = base | {"image_set": key, "protocol": protocol, "concurrency": c}
            run["cells"].append(cell := generator.submit(run_cell, spec).result())
            log(f"{key} {protocol} c={c}: {cell['req_per_s']:.1f} req/s")
    run["images"] = {s.title: f"{len(s.images)} JPEGs, mean {s.mean_kib:.0f} KiB" for s in sets}
    run["checks"] = checks(run["cells"], min(concurrency), max(concurrency))
    print(render(run, args))
    run["checks"] = [{**dataclasses.asdict(x), "passed": x.passed} for x in run["checks"]]
    write_results("bench_protocols", {**run, "settings": vars(args)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
