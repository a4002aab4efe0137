"""Overload and misbehaving clients, at full size, against real processes.

1. Closed loop against standalone `serve` (ImageNet-sized JPEG, ONNX Runtime fp32,
   ResNet-18 random weights, 10 s deadline, response cache off): 256 then 400 clients
   (wrk, one thread), `--duration-s` each. Goodput (200/s) and its ratio, 503 and 504
   counts, seconds without a single 200, p99 of the 200s' server-side total_ms.
2. Refusal cost: a gateway (`api`) whose only worker is stopped, its queue full, under
   64 clients: gateway CPU seconds per refusal and the refusals' p99.
3. Dribbled bodies: `--dribblers` connections each declaring a 1 MB body and sending a
   byte every 3 s for `--dribble-s` (no reconnect), beside a probe opening a new
   connection for a small upload every 100 ms: the probe's success rate.
4. Budget holders: three 64 MiB batch uploads and one 12.5 MiB raw upload, each sending
   a byte every 5 s and reconnecting at once when closed, for 60 s, beside small uploads
   every 100 ms: their success rate and the longest stretch without a 200.
5. KServe JSON: 48 clients sending 1.2 MB JSON bodies (2 crops as nested arrays) for
   20 s, the gateway's budget what a 1 Gi pod gives it: the share refused.

    nice python -m benchmarks.bench_overload        # ~7 minutes
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import selectors
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from pathlib import Path

import httpx

from benchmarks.harness.cpu import cpu_seconds
from benchmarks.harness.images import imagenet_sized
from tests.cluster import fault_settings, gateway, wait_until, workers
from tests.hostile import pixels_json
from tests.redis_server import run_redis
from tests.servers import Server, export_artifact, run_server, server_env

MIB = 1024 * 1024
ENGINE = {"engine": "onnxruntime", "response_cache_entries": "0"}
# One line per response: status, wall-clock second, server-side total_ms (200s).
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/jpeg"
local f = io.open("{image}", "rb"); wrk.body = f:read("*all"); f:close()
function init(args)
  out = io.open("{out}", "a")
  out:setvbuf("line")
end
function response(status, headers, body)
  local total = string.match(body, '"total_ms":%s*([%d%.]+)') or "-"
  out:write(status, " ", os.time(), " ", total, "\\n")
end
"""


def closed_loop(server: Server, work: Path, clients: int, duration_s: int) -> dict[str, float]:
    out = work / f"responses-{clients}.txt"
    script = work / f"closed-{clients}.lua"
    script.write_text(
        WRK_SCRIPT.replace("{image}", str(work / "photo.jpg")).replace("{out}", str(out))
    )
    command = ["wrk", "-t1", f"-c{clients}", f"-d{duration_s}s", "--timeout", "30s"]
    target = f"{server.url}/v1/classify"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([*command, "-s", str(script), target], capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    lines = [line.split() for line in out.read_text().splitlines()]
    codes = Counter(status for status, _, _ in lines)
    seconds = [int(s) for _, s, _ in lines]
    ok_seconds = {int(s) for status, s, _ in lines if status == "200"}
    span = range(min(seconds) + 1, max(seconds))  # whole seconds of the run
    totals = sorted(float(t) for status, _, t in lines if status == "200" and t != "-")
    return {
        "goodput": codes["200"] / duration_s,
        "503": codes["503"],
        "504": codes["504"],
        "silent_s": sum(1 for s in span if s not in ok_seconds),
        "p99_ms": totals[int(len(totals) * 0.99)] if totals else float("nan"),
        "client_cores": client_cpu / duration_s,
    }


def scenario_closed_loop(
    home: Path, logs: Path, work: Path, duration_s: int, changed: dict[str, str]
) -> None:
    print("\n### 1. Closed loop, standalone `serve`, 10 s deadline\n")
    print(f"settings: {ENGINE | changed}\n")
    print(
        "| clients | 200/s | 503 | 504 | seconds without a 200 | 200s p99 total_ms | wrk's cores |"
    )
    print("|---|---|---|---|---|---|---|")
    results = {}
    with run_server(home, logs, "--weights", "random", **ENGINE | changed) as server:
        for clients in (256, 400):
            r = closed_loop(server, work, clients, duration_s)
            results[clients] = r
            print(
                f"| {clients} | {r['goodput']:.1f} | {r['503']:.0f} | {r['504']:.0f} "
                f"| {r['silent_s']:.0f} | {r['p99_ms']:.0f} | {r['client_cores']:.2f} |"
            )
    print(f"\ngoodput 400 / 256: {results[400]['goodput'] / results[256]['goodput']:.2f}")


def scenario_refusal_cost(home: Path, logs: Path, work: Path) -> None:
    print("\n### 2. Refusal cost: gateway alone refusing (worker stopped, queue full)\n")
    photo = (work / "photo.jpg").read_bytes()
    settings = fault_settings(100, max_queue="4", request_timeout_s="60", heartbeat_interval_s="30")
    with ExitStack() as stack:
        redis = stack.enter_context(run_redis(work / "redis"))
        (worker,) = stack.enter_context(workers(home, logs, redis, "w", **settings))
        api = stack.enter_context(gateway(home, logs, redis, **settings))
        os.kill(worker.process.pid, signal.SIGSTOP)
        try:
            fill = ThreadPoolExecutor(4)
            for _ in range(4):  # hold the queue's four places
                fill.submit(post, api.url, photo, 70)
            wait_until(lambda: post(api.url, photo, 5)[0] == 503, 30, "queue full")
            cpu_before = cpu_seconds(api.process.pid)
            latencies: list[float] = []
            lock = threading.Lock()
            end = time.monotonic() + 20

            def client() -> None:
                with httpx.Client(timeout=10) as session:
                    while time.monotonic() < end:
                        start = time.perf_counter()
                        code = session.post(
                            f"{api.url}/v1/classify",
                            content=photo,
                            headers={"content-type": "image/jpeg"},
                        ).status_code
                        with lock:
                            if code == 503:
                                latencies.append(time.perf_counter() - start)

            with ThreadPoolExecutor(64) as pool:
                for _ in range(64):
                    pool.submit(client)
            cpu = cpu_seconds(api.process.pid) - cpu_before
        finally:
            os.kill(worker.process.pid, signal.SIGCONT)
            fill.shutdown(wait=False, cancel_futures=True)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(f"{len(latencies)} refusals in 20 s, gateway CPU {cpu / len(latencies) * 1e6:.0f} µs")
    print(f"per refusal; refusal p99 {p99:.1f} ms (64 clients, the client in the same box)")


def post(url: str, body: bytes, timeout: float) -> tuple[int, float]:
    start = time.perf_counter()
    try:
        code = httpx.post(
            f"{url}/v1/classify",
            content=body,
            headers={"content-type": "image/jpeg"},
            timeout=timeout,
        ).status_code
    except httpx.HTTPError:
        code = 0
    return code, time.perf_counter() - start


class Dribblers:
    """Connections that each sent a request head and then send a byte every `every_s`;
    one closed by the server is opened again at once when `reconnect`."""

    def __init__(self, port: int, heads: list[bytes], every_s: float, reconnect: bool) -> None:
        self.port, self.every_s, self.reconnect = port, every_s, reconnect
        self.selector = selectors.DefaultSelector()
        self.socks: dict[socket.socket, bytes] = {}
        for request_head in heads:
            self.connect(request_head)

    def connect(self, request_head: bytes) -> None:
        with suppress(OSError):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(request_head)
            sock.setblocking(False)
            self.socks[sock] = request_head
            self.selector.register(sock, selectors.EVENT_READ)

    def closed(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        request_head = self.socks.pop(sock)
        sock.close()
        if self.reconnect:
            self.connect(request_head)

    def run(self, until: float) -> None:
        next_byte = time.monotonic() + self.every_s
        while time.monotonic() < until:
            for key, _ in self.selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = b""
                with suppress(OSError):
                    data = sock.recv(65536)
                if not data:
                    self.closed(sock)
            if time.monotonic() >= next_byte:
                for sock in list(self.socks):
                    with suppress(OSError):
                        sock.send(b"a")
                next_byte += self.every_s
        for sock in self.socks:
            sock.close()


def dribble(port: int, heads: list[bytes], every_s: float, until: float, reconnect: bool) -> None:
    Dribblers(port, heads, every_s, reconnect).run(until)


def probe(url: str, body: bytes, until: float) -> list[tuple[float, int]]:
    """A small upload on a new connection every 100 ms: (when, status; 0 for none)."""
    seen = []
    while time.monotonic() < until:
        code, _ = post(url, body, 10)
        seen.append((time.monotonic(), code))
        time.sleep(0.1)
    return seen


def head(path: str, length: int, media: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {media}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def longest_gap(seen: list[tuple[float, int]]) -> float:
    times = [t for t, code in seen if code == 200]
    return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


def scenario_dribblers(home: Path, logs: Path, work: Path, count: int, duration_s: int) -> None:
    print(f"\n### 3. {count} dribbled bodies (1 MB declared, a byte every 3 s, {duration_s} s)\n")
    photo = (work / "photo.jpg").read_bytes()
    with run_server(home, logs, "--weights", "random", **ENGINE) as server:
        port = int(server.url.rsplit(":", 1)[1])
        until = time.monotonic() + duration_s
        heads = [head("/v1/classify", 1_000_000, "image/jpeg")] * count
        attacker = threading.Thread(target=dribble, args=(port, heads, 3.0, until, False))
        attacker.start()
        time.sleep(2)
        seen = probe(server.url, photo, until)
        attacker.join()
    ok = sum(code == 200 for _, code in seen)
    print(f"new clients: {ok} of {len(seen)} answered 200 ({ok / len(seen):.1%}),")
    print(f"longest stretch without a 200: {longest_gap(seen):.1f} s")


def scenario_holders(home: Path, logs: Path, work: Path) -> None:
    print("\n### 4. Four budget holders (3 x 64 MiB batch, 1 x 12.5 MiB raw), 60 s\n")
    photo = (work / "photo.jpg").read_bytes()
    batch = head("/v1/classify/batch", 64 * MIB - 1024, "multipart/form-data; boundary=x")
    batch += b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    raw = head("/v1/classify", int(12.5 * MIB), "image/png")
    # What a 1 Gi pod's budget gives (api/limits/budget.py: 50% minus a ~115 MB baseline).
    with run_server(
        home, logs, "--weights", "random", memory_budget_bytes=str(397 * MIB), **ENGINE
    ) as server:
        port = int(server.url.rsplit(":", 1)[1])
        until = time.monotonic() + 60
        attacker = threading.Thread(
            target=dribble, args=(port, [batch, batch, batch, raw], 5.0, until, True)
        )
        attacker.start()
        time.sleep(1)
        seen = probe(server.url, photo, until)
        attacker.join()
    ok = sum(code == 200 for _, code in seen)
    print(f"small uploads: {ok} of {len(seen)} answered 200 ({ok / len(seen):.1%}),")
    print(f"longest stretch without a 200: {longest_gap(seen):.1f} s")


def scenario_kserve_json(home: Path, logs: Path) -> None:
    print("\n### 5. KServe JSON, 48 clients, 1.2 MB bodies, 20 s (budget of a 1 Gi pod)\n")
    body = pixels_json(2)
    with run_server(
        home, logs, "--weights", "random", memory_budget_bytes=str(397 * MIB), **ENGINE
    ) as server:
        codes: Counter[int] = Counter()
        lock = threading.Lock()
        end = time.monotonic() + 20

        def client() -> None:
            with httpx.Client(timeout=60) as session:
                while time.monotonic() < end:
                    code = session.post(
                        f"{server.url}/v2/models/resnet18/infer",
                        content=body,
                        headers={"content-type": "application/json"},
                    ).status_code
                    with lock:
                        codes[code] += 1

        with ThreadPoolExecutor(48) as pool:
            for _ in range(48):
                pool.submit(client)
    total = sum(codes.values())
    print(f"{total} requests: {dict(codes)}; refused (503): {codes[503] / total:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=int, default=30, help="each closed-loop phase")
    parser.add_argument("--dribblers", type=int, default=2100)
    parser.add_argument("--dribble-s", type=int, default=90)
    parser.add_argument("--only", type=int, action="append", help="scenario numbers to run")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        help="NAME=VALUE, a server setting to change (closed loop only)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    logs = work / "logs"
    logs.mkdir()
    home = Path(os.environ.get("BENCH_HOME", work / "home"))
    export_artifact(server_env(home))
    (work / "photo.jpg").write_bytes(imagenet_sized(1)[0])
    print(f"work: {work}")
    wanted = set(args.only or range(1, 6))
    if 1 in wanted:
        changed = dict(pair.split("=", 1) for pair in args.setting)
        scenario_closed_loop(home, logs, work, args.duration_s, changed)
    if 2 in wanted:
        scenario_refusal_cost(home, logs, work)
    if 3 in wanted:
        scenario_dribblers(home, logs, work, args.dribblers, args.dribble_s)
    if 4 in wanted:
        scenario_holders(home, logs, work)
    if 5 in wanted:
        scenario_kserve_json(home, logs)


if __name__ == "__main__":
    main()
