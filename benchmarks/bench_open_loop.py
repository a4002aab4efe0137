"""Open-loop overload against standalone `serve`: requests arrive at a fixed rate
whatever the answers, as users do (a closed loop re-sends the instant it is refused,
which is a refusal flood, not a load: `bench_hostile`'s 1.5x/10x rows).

1. capacity: goodput (200/s) of a closed loop of 32 clients, `--capacity-s`;
2. arrivals at 1.5x and at 10x that capacity, Poisson, `--duration-s` each: goodput,
   refusals (503), 504s, the refusals' p50/p99, the admitted requests' p99 and the CPU
   the server's event loop (HTTP parsing, admission, refusals) took from inference.

The generator is a few dozen lines of asyncio over raw keep-alive sockets (one
pre-built request, the status line and body read back), so it costs ~0.1 ms of CPU a
request beside a server on the same 2 cores; its CPU share is printed. ImageNet-sized
JPEG, ResNet-18 random weights, ONNX Runtime fp32, response cache off, 10 s deadline.

    python -m benchmarks.bench_open_loop          # ~2 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.harness.cpu import cpu_seconds
from benchmarks.harness.images import imagenet_sized
from tests.servers import Server, export_artifact, run_server, server_env

ENGINE = {"engine": "onnxruntime", "response_cache_entries": "0"}


# A connection idle this long is not reused: the server closes idle ones after
# keep_alive_timeout_s (5 s), and reusing one as it closes loses the request (httpx's
# keepalive_expiry does the same).
IDLE_EXPIRY_S = 4.0


class Connections:
    """Idle keep-alive connections to the server, opened as arrivals need them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < IDLE_EXPIRY_S:
                return reader, writer
            writer.close()
        return await self._open()

    async def send(self, request: bytes) -> tuple[int, float]:
        """(status, seconds) of one request; 0 when it could not be sent or read."""
        start = time.perf_counter()
        reader, writer = await self._connection()
        try:
            writer.write(request)
            status_line = await reader.readline()
            length, keep = 0, True
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep = False  # the server answered before reading the body
            await reader.readexactly(length)
            status = int(status_line.split()[1])
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            writer.close()
            return 0, time.perf_counter() - start
        if keep:
            self.idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return status, time.perf_counter() - start

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


def request_bytes(port: int, body: bytes) -> bytes:
    head = (
        f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def open_loop(
    port: int, body: bytes, rate: float, duration_s: float
) -> list[tuple[int, float]]:
    """Poisson arrivals at `rate` per second for `duration_s`; every answer."""
    connections, request = Connections(port), request_bytes(port, body)
    tasks: list[asyncio.Task[tuple[int, float]]] = []
    loop = asyncio.get_running_loop()
    next_at, end = loop.time(), loop.time() + duration_s
    while next_at < end:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        tasks.append(asyncio.create_task(connections.send(request)))
        next_at += random.expovariate(rate)
    return list(await asyncio.gather(*tasks))


async def closed_loop(port: int, body: bytes, clients: int, duration_s: float) -> int:
    """Successes of `clients` closed-loop clients over `duration_s`."""
    request, end = request_bytes(port, body), time.monotonic() + duration_s

    async def client() -> int:
        connections, ok = Connections(port), 0
        while time.monotonic() < end:
            ok += (await connections.send(request))[0] == 200
        return ok

    return sum(await asyncio.gather(*(client() for _ in range(clients))))


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1000 if values else float("nan")


def phase(server: Server, body: bytes, label: str, rate: float, duration_s: float) -> float:
    port = int(server.url.rsplit(":", 1)[1])
    mine, loop = cpu_seconds(os.getpid()), cpu_seconds(server.pid, thread=server.pid)
    answers = asyncio.run(open_loop(port, body, rate, duration_s))
    generator = (cpu_seconds(os.getpid()) - mine) / duration_s
    loop = (cpu_seconds(server.pid, thread=server.pid) - loop) / duration_s
    by_status = {s: [t for status, t in answers if status == s] for s in (200, 503, 504, 0)}
    goodput = len(by_status[200]) / duration_s
    print(
        f"| {label} | {rate:.0f} | {len(answers)} | {goodput:.1f} | {len(by_status[503])} "
        f"| {len(by_status[504])} | {len(by_status[0])} "
        f"| {quantile(by_status[503], 0.5):.1f} / {quantile(by_status[503], 0.99):.1f} "
        f"| {quantile(by_status[200], 0.99):.0f} | {loop:.2f} | {generator:.2f} |"
    )
    return goodput


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=30)
    parser.add_argument("--capacity-s", type=float, default=15)
    parser.add_argument(
        "--setting", action="append", default=[], help="NAME=VALUE, a server setting to change"
    )
    args = parser.parse_args()
    settings = {**ENGINE, **dict(pair.split("=", 1) for pair in args.setting)}
    work = Path(tempfile.mkdtemp(prefix="bench-open-loop-"))
    home = Path(os.environ.get("BENCH_HOME", work / "home"))
    export_artifact(server_env(home))
    body = imagenet_sized(1)[0]
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    cpu = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line), "?"
    )
    with run_server(home, work, "--weights", "random", **settings) as server:
        port = int(server.url.rsplit(":", 1)[1])
        asyncio.run(closed_loop(port, body, 8, 3))  # warm
        capacity = asyncio.run(closed_loop(port, body, 32, args.capacity_s)) / args.capacity_s
        print(f"\n## Open loop, {cpu}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}\n")
        print(f"settings: {settings}\n")
        print(f"capacity (closed loop, 32 clients, {args.capacity_s:g} s): {capacity:.1f} req/s\n")
        print(
            "| load | arrivals/s | requests | goodput (200/s) | 503 | 504 | failed "
            "| refusal p50 / p99 ms | 200s p99 ms | event loop cores | generator cores |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        low = phase(server, body, "1.5x", 1.5 * capacity, args.duration_s)
        high = phase(server, body, "10x", 10 * capacity, args.duration_s)
    print(f"\ngoodput at 10x / goodput at 1.5x: {high / low:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
