"""Hostile loads against real processes, and what they cost.

Distributed shape (redis-server, one `worker`, one `api` gateway, one `jobs-worker`),
each hostile load run alone with a /healthz probe beside it (every 50 ms):

1. KServe bombs: 8 parallel gzip bodies of ~58 KB that inflate to 60 MB of JSON
   elements (4 UINT8 `data` arrays, 4 BYTES lists of empty strings);
2. small images, huge pixels: 16 parallel 40 MP RGBA PNGs (155 KB each), then 16
   parallel 4 MP RGBA PNGs (ones that fit the budget);
3. HTTP: 20 connections sending endless headers, and 1,000 idle connections;
4. a zip of 38 40 MP RGBA PNGs and 6 2 MP ones to the jobs-worker.

For each: peak RSS of the gateway (with its parser process) and of the jobs-worker,
against 60% of their deployment limits (768 Mi, 512 Mi), and the slowest probe.

Then standalone overload with wrk (`serve`, max_queue 32): 1.5x and 10x the load that
fills the queue, 20 s each; decodes per admitted job, goodput (200/s) and its ratio, and
the p99 of refusals (503s) seen by a side client sending one request every 20 ms.
"Admitted" jobs are those that entered the queue (inferred or expired there), counted
once every request has been answered.

    nice python -m benchmarks.bench_hostile           # ~4 minutes
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.cluster import gateway, workers
from tests.hostile import (
    Prober,
    kserve_bomb,
    megapixels_png,
    peak_rss_bytes,
    reset_peak,
    rss_bytes,
)
from tests.images import jpeg
from tests.redis_server import run_redis
from tests.servers import (
    Server,
    export_artifact,
    launch,
    resnet_serve,
    run_server,
    server_env,
    stop_process,
)

MIB = 1024 * 1024
GATEWAY_LIMIT = 768 * MIB
JOBS_WORKER_LIMIT = 512 * MIB
# What the budgets would size themselves to in those pods (api/limits/budget.py: 50% of the
# limit minus a ~110 MB baseline); set explicitly, this machine has no cgroup limit.
GATEWAY_BUDGET = 270 * MIB
JOBS_WORKER_BUDGET = 150 * MIB
ENGINE = {"engine": "onnxruntime"}


def row(name: str, cells: list[str]) -> None:
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def hostile(
    name: str,
    load: Callable[[], str],
    gateway_pid: int,
    jobs_pid: int,
    url: str,
) -> None:
    time.sleep(1)
    idle_gw, idle_jobs = rss_bytes(gateway_pid), rss_bytes(jobs_pid)
    reset_peak(gateway_pid)
    reset_peak(jobs_pid)
    with Prober(url) as prober:
        outcome = load()
    peak_gw, peak_jobs = peak_rss_bytes(gateway_pid), peak_rss_bytes(jobs_pid)
    time.sleep(3)
    after_gw = rss_bytes(gateway_pid)
    row(
        name,
        [
            f"{idle_gw / MIB:.0f} → {peak_gw / MIB:.0f} ({peak_gw / GATEWAY_LIMIT:.0%})",
            f"{after_gw / MIB:.0f}",
            f"{idle_jobs / MIB:.0f} → {peak_jobs / MIB:.0f} ({peak_jobs / JOBS_WORKER_LIMIT:.0%})",
            f"{prober.worst_s * 1000:.0f}",
            outcome,
        ],
    )


def statuses(responses: list[httpx.Response]) -> str:
    counts: dict[int, int] = {}
    for response in responses:
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
    return ", ".join(f"{n}x{status}" for status, n in sorted(counts.items()))


def parallel_posts(url: str, bodies: list[bytes], headers: dict[str, str]) -> str:
    def post(body: bytes) -> httpx.Response:
        return httpx.post(url, content=body, headers=headers, timeout=120)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return statuses(list(pool.map(post, bodies)))


def endless_headers(host: str, port: int, connections: int) -> str:
    def one(_: int) -> int:
        sent = 0
        with socket.create_connection((host, port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
            try:
                while sent < 32 * MIB:
                    sock.sendall(filler)
                    sent += len(filler)
            except OSError:
                pass
        return sent

    with ThreadPoolExecutor(connections) as pool:
        sent = list(pool.map(one, range(connections)))
    return f"cut off after {max(sent) / 1024:.0f} KiB at most (of 32 MiB)"


def idle_connections(host: str, port: int, count: int, wait_s: float) -> str:
    sockets = []
    for _ in range(count):
        try:
            sockets.append(socket.create_connection((host, port), timeout=5))
        except OSError:
            break
    time.sleep(wait_s)
    still_open = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            if sock.recv(1) != b"":
                still_open += 1
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        sock.close()
    return f"{len(sockets)} opened, {still_open} still open after {wait_s:.0f} s"


def zipped(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def bulk_zip(url: str, data: bytes) -> str:
    response = httpx.post(
        f"{url}/v1/jobs", content=data, headers={"content-type": "application/zip"}, timeout=60
    )
    if response.status_code != 202:
        return f"submit: {response.status_code} {response.text[:100]}"
    location = response.json()["location"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}{location}", timeout=30).json()
        if job["status"] in ("done", "failed"):
            codes: dict[str, int] = {}
            for item in job["results"]:
                code = (item.get("error") or {}).get("code", "ok")
                codes[code] = codes.get(code, 0) + 1
            return f"{len(data) / 1024:.0f} KiB zip, job {job['status']}: " + ", ".join(
                f"{n} {code}" for code, n in sorted(codes.items())
            )
        time.sleep(0.5)
    return "job did not finish in 600 s"


@contextmanager
def jobs_worker(home: Path, logs: Path, redis_url: str, **settings: str) -> Iterator[int]:
    command = resnet_serve("jobs-worker", "--worker-id", "bench")
    env = server_env(home, redis_url=redis_url, **settings)
    process = launch(command, env, logs / "bench-jobs-worker.log")
    try:
        time.sleep(3)
        yield process.pid
    finally:
        stop_process(process)


def distributed(home: Path, logs: Path) -> None:
    print("\n### Hostile loads, distributed (peak RSS in MiB; % of the pod limit)\n")
    print(
        "| load | gateway idle → peak | gateway 3 s after | jobs-worker idle → peak "
        "| slowest probe (ms) | outcome |"
    )
    print("|---|---|---|---|---|---|")
    with ExitStack() as stack:
        redis = stack.enter_context(run_redis(logs / "bench-redis"))
        stack.enter_context(workers(home, logs, redis, "bench-w1", **ENGINE))
        server: Server = stack.enter_context(
            gateway(home, logs, redis, memory_budget_bytes=str(GATEWAY_BUDGET))
        )
        jobs_pid = stack.enter_context(
            jobs_worker(home, logs, redis.url, memory_budget_bytes=str(JOBS_WORKER_BUDGET))
        )
        gw = server.process.pid
        httpx.post(
            f"{server.url}/v1/classify",
            content=jpeg("chelsea"),
            headers={"content-type": "image/jpeg"},
            timeout=60,
        ).raise_for_status()
        infer = f"{server.url}/v2/models/resnet18/infer"
        bombs = [kserve_bomb(60_000_000, "uint8")] * 4 + [kserve_bomb(60_000_000, "bytes")] * 4
        gzip_json = {"content-type": "application/json", "content-encoding": "gzip"}
        hostile(
            "8 KServe gzip bombs (60 MB JSON each)",
            lambda: parallel_posts(infer, bombs, gzip_json),
            gw,
            jobs_pid,
            server.url,
        )
        classify = f"{server.url}/v1/classify"
        png = {"content-type": "image/png"}
        huge = megapixels_png(40)
        hostile(
            "16 x 40 MP RGBA PNG (155 KB each)",
            lambda: parallel_posts(classify, [huge] * 16, png),
            gw,
            jobs_pid,
            server.url,
        )
        large = megapixels_png(4)
        hostile(
            "16 x 4 MP RGBA PNG",
            lambda: parallel_posts(classify, [large] * 16, png),
            gw,
            jobs_pid,
            server.url,
        )
        host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
        hostile(
            "20 connections x endless headers",
            lambda: endless_headers(host, port, 20),
            gw,
            jobs_pid,
            server.url,
        )
        hostile(
            "1,000 idle connections",
            lambda: idle_connections(host, port, 1000, 12),
            gw,
            jobs_pid,
            server.url,
        )
        archive = zipped(
            [(f"huge{i}.png", huge) for i in range(38)]
            + [(f"large{i}.png", megapixels_png(2)) for i in range(6)]
        )
        hostile(
            "bulk zip: 38 x 40 MP + 6 x 2 MP RGBA",
            lambda: bulk_zip(server.url, archive),
            gw,
            jobs_pid,
            server.url,
        )


WRK_SCRIPT = r"""
local f = assert(io.open("{image}", "rb"))
local body = f:read("*all")
f:close()
local headers = { ["Content-Type"] = "image/jpeg" }
function request()
  return wrk.format("POST", "/v1/classify", headers, body)
end
"""


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, value = line.rsplit(" ", 1)
        if sample.split("{")[0] == name and all(f'{k}="{v}"' in sample for k, v in labels.items()):
            total += float(value)
    return total


def overload(home: Path, logs: Path, duration_s: int, loop_nice: int) -> None:
    print(f"\n### Overload, standalone `serve` (max_queue 32, loop_nice {loop_nice}), wrk\n")
    work = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    image = work / "photo.jpg"
    image.write_bytes(jpeg("chelsea"))
    script = work / "classify.lua"
    script.write_text(WRK_SCRIPT.replace("{image}", str(image)))
    print(
        "| load | connections | 200/s (goodput) | 503/s | decodes per admitted job "
        "| refusal p50 / p99 (ms) | wrk p99 (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    goodput: dict[str, float] = {}
    with run_server(
        home,
        logs,
        "--weights",
        "random",
        max_queue="32",
        response_cache_entries="0",
        loop_nice=str(loop_nice),
        **ENGINE,
    ) as server:
        httpx.post(
            f"{server.url}/v1/classify",
            content=image.read_bytes(),
            headers={"content-type": "image/jpeg"},
            timeout=60,
        ).raise_for_status()
        for label, connections in (("1.5x", 48), ("10x", 320)):
            before = httpx.get(f"{server.url}/metrics", timeout=10).text
            refusals: list[float] = []
            stop = threading.Event()

            def side(stop: threading.Event = stop, into: list[float] = refusals) -> None:
                with httpx.Client(timeout=30) as client:
                    while not stop.is_set():
                        start = time.perf_counter()
                        try:
                            response = client.post(
                                f"{server.url}/v1/classify",
                                content=image.read_bytes(),
                                headers={"content-type": "image/jpeg"},
                            )
                        except httpx.HTTPError:
                            continue
                        if response.status_code == 503:
                            into.append(time.perf_counter() - start)
                        stop.wait(0.02)

            thread = threading.Thread(target=side, daemon=True)
            thread.start()
            done = subprocess.run(
                [
                    *("wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout", "30s"),
                    *("--latency", "-s", str(script), server.url),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            stop.set()
            thread.join(timeout=60)
            # Let every admitted job finish (or expire) before counting.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                text = httpx.get(f"{server.url}/metrics", timeout=10).text
                if metric(text, "resnet_serve_in_flight_requests") <= 1:
                    break
                time.sleep(0.5)
            after = httpx.get(f"{server.url}/metrics", timeout=10).text

            def delta(name: str, before: str = before, after: str = after, **labels: str) -> float:
                return metric(after, name, **labels) - metric(before, name, **labels)

            ok = delta("resnet_serve_requests_total", route="/v1/classify", status="200")
            refused = delta("resnet_serve_requests_total", route="/v1/classify", status="503")
            decodes = delta("resnet_serve_decode_duration_seconds_count")
            # Jobs that entered the queue: each was inferred or expired there.
            admitted = delta("resnet_serve_batch_size_sum") + delta(
                "resnet_serve_expired_jobs_total"
            )
            goodput[label] = ok / duration_s
            refusals.sort()
            p50 = refusals[len(refusals) // 2] * 1000 if refusals else float("nan")
            p99 = refusals[int(len(refusals) * 0.99)] * 1000 if refusals else float("nan")
            wrk_p99 = next(
                (line.split()[-1] for line in done.stdout.splitlines() if "99%" in line), "?"
            )
            row(
                label,
                [
                    str(connections),
                    f"{ok / duration_s:.1f}",
                    f"{refused / duration_s:.1f}",
                    f"{decodes / admitted:.3f}" if admitted else "-",
                    f"{p50:.1f} / {p99:.1f} ({len(refusals)} refusals)",
                    wrk_p99,
                ],
            )
    if goodput.get("1.5x"):
        print(f"\ngoodput at 10x / goodput at 1.5x: {goodput['10x'] / goodput['1.5x']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=int, default=20, help="each wrk phase")
    parser.add_argument("--skip-distributed", action="store_true")
    parser.add_argument("--skip-overload", action="store_true")
    parser.add_argument("--loop-nice", type=int, default=0, help="standalone loop_nice")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-hostile-logs-"))
    home = Path(os.environ.get("BENCH_HOME", logs / "home"))
    export_artifact(server_env(home))  # server_env pins the onnxruntime engine
    print(f"logs: {logs}")
    if not args.skip_distributed:
        distributed(home, logs)
    if not args.skip_overload:
        overload(home, logs, args.duration_s, args.loop_nice)


if __name__ == "__main__":
    main()
