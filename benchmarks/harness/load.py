"""Load generators for POST /v1/classify: `wrk` (C, cheap) or asyncio + httpx."""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.harness.console import log
from benchmarks.harness.images import ImageSet

CLASSIFY_PATH = "/v1/classify"


@dataclass
class Load:
    image_set: str
    concurrency: int
    client: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    client_cpu_cores: float  # CPU the load generator itself used, in cores
    server_cpu_cores: float = 0.0
    server_loop_cpu_cores: float = 0.0  # the event-loop thread alone (HTTP, JSON, asyncio)
    foreign_cores: float = 0.0  # other processes on this machine during the run
    server_rss_mb: float = 0.0  # after the run
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def server_cpu_ms_per_request(self) -> float:
        return self.server_cpu_cores / self.req_per_s * 1000 if self.requests else float("nan")


WRK_SCRIPT = r"""
local bodies = {}
local n = 0
local i = 0
local headers = { ["Content-Type"] = "image/jpeg" }

function init(args)
  for _, path in ipairs(args) do
    local f = assert(io.open(path, "rb"))
    n = n + 1
    bodies[n] = f:read("*all")
    f:close()
  end
  -- each wrk thread starts at a different image
  i = math.random(0, n - 1)
end

function request()
  i = (i % n) + 1
  return wrk.format("POST", "{path}", headers, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nBENCH_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d,'
    .. ' "write": %d, "status": %d, "timeout": %d,'
    .. ' "p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


class WrkClient:
    name = "wrk"

    def __init__(self, work_dir: Path, image_sets: Sequence[ImageSet]) -> None:
        self._script = work_dir / "classify.lua"
        self._script.write_text(WRK_SCRIPT.replace("{path}", CLASSIFY_PATH))
        self._files: dict[str, list[str]] = {}
        for image_set in image_sets:
            folder = work_dir / image_set.key
            folder.mkdir()
            paths = []
            for n, data in enumerate(image_set.images):
                path = folder / f"{n:03d}.jpg"
                path.write_bytes(data)
                paths.append(str(path))
            self._files[image_set.key] = paths

    def run(self, url: str, image_set: str, concurrency: int, duration_s: float) -> Load:
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s"]
        command += ["--timeout", "30s", "-s", str(self._script), url, "--"]
        command += self._files[image_set]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON "))
        raw = json.loads(line.removeprefix("BENCH_JSON "))
        seconds = raw["duration_us"] / 1e6
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
        return Load(
            image_set=image_set,
            concurrency=concurrency,
            client=self.name,
            requests=raw["requests"],
            seconds=seconds,
            errors=errors,
            p50_ms=raw["p50_us"] / 1000,
            p90_ms=raw["p90_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            client_cpu_cores=cpu / seconds,
        )


class HttpxClient:
    """Fallback load generator: asyncio + httpx in this process. Costs far more CPU per
    request than wrk, which on two cores is taken from the server; reported per run."""

    name = "httpx"

    def __init__(self, image_sets: Sequence[ImageSet]) -> None:
        self._images = {s.key: s.images for s in image_sets}

    def run(self, url: str, image_set: str, concurrency: int, duration_s: float) -> Load:
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        latencies, errors = asyncio.run(
            self._drive(url, self._images[image_set], concurrency, duration_s)
        )
        seconds = time.perf_counter() - wall_start
        p50, p90, p99 = percentiles_ms(latencies)
        return Load(
            image_set=image_set,
            concurrency=concurrency,
            client=self.name,
            requests=len(latencies),
            seconds=seconds,
            errors=errors,
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            client_cpu_cores=(time.process_time() - cpu_start) / seconds,
        )

    @staticmethod
    async def _drive(
        url: str, images: list[bytes], concurrency: int, duration_s: float
    ) -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        stop = time.perf_counter() + duration_s
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        headers = {"content-type": "image/jpeg"}
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

            async def user(offset: int) -> None:
                nonlocal errors
                n = offset
                while time.perf_counter() < stop:
                    start = time.perf_counter()
                    body = images[n % len(images)]
                    n += 1
                    try:
                        response = await client.post(CLASSIFY_PATH, content=body, headers=headers)
                        ok = response.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if ok:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors += 1

            await asyncio.gather(*(user(i * 7) for i in range(concurrency)))
        return latencies, errors


LoadClient = WrkClient | HttpxClient


def load_client(name: str, work_dir: Path, image_sets: Sequence[ImageSet]) -> LoadClient:
    """`wrk`, `httpx`, or `auto`: wrk where it is installed, httpx otherwise."""
    if name == "auto":
        name = "wrk" if shutil.which("wrk") else "httpx"
    if name == "httpx":
        log("wrk not found (apt-get install wrk): the httpx client shares the server's cores")
        return HttpxClient(image_sets)
    return WrkClient(work_dir, image_sets)


def percentiles_ms(latencies_s: list[float]) -> tuple[float, float, float]:
    """p50, p90 and p99 in milliseconds."""
    if len(latencies_s) < 2:
        value = latencies_s[0] * 1000 if latencies_s else float("nan")
        return value, value, value
    cuts = statistics.quantiles(latencies_s, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[89] * 1000, cuts[98] * 1000
