"""Faults under load, on this machine, in one run: what clients see when a worker or
Redis dies, when batches are slow, and when an engine breaks.

Real redis-server, one `api` gateway and two `worker` processes running the TEST-ONLY
fault-injecting engine (a fixed batch time, no CPU: the figures do not depend on the
machine's speed or load), 32 closed-loop clients. For each scenario it prints requests
sent, answered (any HTTP status), lost (no answer at all), duplicated (inferences beyond
one per answered job, on workers that lived to report them), 5xx by code, and times.

    python -m benchmarks.bench_faults          # ~3 minutes
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.cluster import (
    fault_settings,
    gateway,
    images,
    pending_count,
    set_fault,
    wait_until,
    workers,
)
from tests.load import Load, Outcome, by_code, in_flight_at
from tests.redis_server import RedisServer, run_redis
from tests.servers import Server, Worker

CLIENTS = 32


@dataclass
class Report:
    scenario: str
    outcomes: list[Outcome]
    duplicated: int | None
    notes: str

    def line(self) -> str:
        answered = sum(1 for o in self.outcomes if o.status)
        lost = len(self.outcomes) - answered
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(by_code(self.outcomes).items()))
        dup = "n/a" if self.duplicated is None else str(self.duplicated)
        return (
            f"| {self.scenario} | {len(self.outcomes)} | {answered} | {lost} | {dup} | "
            f"{codes or 'none'} | {self.notes} |"
        )


def inferences(pool: list[Worker]) -> int:
    return int(sum(w.metric("resnet_serve_batch_size_sum") for w in pool))


def ok(outcomes: list[Outcome]) -> int:
    return sum(1 for o in outcomes if o.status == 200)


@contextmanager
def shape(
    root: Path, name: str, control: Path | None = None, **settings: str
) -> Iterator[tuple[RedisServer, Server, list[Worker]]]:
    home, logs = root / name / "home", root / name / "logs"
    logs.mkdir(parents=True)
    with ExitStack() as stack:
        redis = stack.enter_context(run_redis(root / name / "redis"))
        plain = fault_settings(**settings)
        faulty = dict(plain, FAULT_ENGINE_CONTROL_FILE=str(control)) if control else plain
        pool = [
            *stack.enter_context(workers(home, logs, redis, "w1", **faulty)),
            *stack.enter_context(workers(home, logs, redis, "w2", **plain)),
        ]
        server = stack.enter_context(gateway(home, logs, redis, **plain))
        yield redis, server, pool


def answer_times(outcomes: list[Outcome], moment: float) -> str:
    held = in_flight_at(outcomes, moment)
    if not held:
        return "none in flight"
    last = max(o.answered_at for o in held) - moment
    return f"{len(held)} in flight, last answered {last:.2f} s after"


def worker_killed(root: Path, data: list[bytes], run_s: float) -> Report:
    with shape(root, "worker-kill", latency_ms="100") as (redis, server, pool):
        load = Load(server.url, data, CLIENTS).start()
        wait_until(lambda: load.sent >= 64 and pending_count(redis, "w1") > 0, 60)
        killed = time.monotonic()
        pool[0].process.send_signal(signal.SIGKILL)
        time.sleep(run_s)
        outcomes = load.stop()
    return Report("worker SIGKILL", outcomes, None, answer_times(outcomes, killed))


def redis_lost(root: Path, data: list[bytes], how: signal.Signals, run_s: float) -> Report:
    name = "redis-kill" if how == signal.SIGKILL else "redis-stop"
    with shape(root, name, latency_ms="100") as (redis, server, pool):
        assert redis.process is not None
        load = Load(server.url, data, CLIENTS).start()
        wait_until(lambda: load.sent >= 64, 60)
        lost_at = time.monotonic()
        redis.process.send_signal(how)
        time.sleep(3)
        if how == signal.SIGKILL:
            redis.process.wait()
            redis.start()
        else:
            redis.process.send_signal(signal.SIGCONT)
        back = time.monotonic()
        wait_until(lambda: any(o.status == 200 and o.sent_at > back for o in load.outcomes), 60)
        recovered = min(
            o.answered_at for o in load.outcomes if o.status == 200 and o.sent_at > back
        )
        time.sleep(run_s)
        outcomes = load.stop()
        done = inferences(pool)
    label = "Redis SIGKILL 3 s" if how == signal.SIGKILL else "Redis SIGSTOP 3 s"
    after = recovered - back
    notes = f"{answer_times(outcomes, lost_at)}; first 200 {after:.2f} s after it was back"
    # Jobs run after their requests were answered 503 are not duplicates: not counted.
    return Report(label, outcomes, None, f"{notes}; {done} inferences")


def slow_batches(root: Path, data: list[bytes], run_s: float) -> Report:
    settings = {"latency_ms": "1500", "max_batch": "8", "visibility_timeout_s": "2.5"}
    with shape(root, "slow", **settings, request_timeout_s="40") as (redis, server, pool):
        load = Load(server.url, data, CLIENTS).start()
        time.sleep(run_s)
        outcomes = load.stop()
        duplicated = inferences(pool) - ok(outcomes)
        reclaimed = sum(w.metric("resnet_serve_reclaimed_jobs_total") for w in pool)
        dead = redis.client().xlen("resnet-serve:dead:resnet18")
    notes = f"batch 1.5 s, visibility 2.5 s; reclaimed {reclaimed:g}, dead letters {dead}"
    return Report("slow batches", outcomes, duplicated, notes)


def engine_broken(root: Path, data: list[bytes], run_s: float) -> Report:
    control = root / "fault.json"
    set_fault(control, "ok")
    with shape(root, "broken", control, latency_ms="100") as (_, server, pool):
        load = Load(server.url, data, CLIENTS).start()
        wait_until(lambda: load.sent >= 64, 60)
        broke = time.monotonic()
        set_fault(control, "fail")
        code = pool[0].process.wait(timeout=60)
        exited = time.monotonic() - broke
        time.sleep(run_s)
        outcomes = load.stop()
    notes = (
        f"w1 exited {code} {exited:.2f} s after its engine broke; {answer_times(outcomes, broke)}"
    )
    return Report("engine broken", outcomes, None, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-s", type=float, default=10.0, help="load after each fault")
    args = parser.parse_args()
    data = images(64, seed=21)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        root = Path(tmp)
        reports = [
            worker_killed(root, data, args.run_s),
            redis_lost(root, data, signal.SIGKILL, args.run_s),
            redis_lost(root, data, signal.SIGSTOP, args.run_s),
            slow_batches(root, data, args.run_s),
            engine_broken(root, data, args.run_s),
        ]
    print(f"\n{CLIENTS} clients, 2 workers (fault engine), 1 gateway, redis-server\n")
    print("| scenario | sent | answered | lost | duplicated | 5xx by code | times |")
    print("|---|---|---|---|---|---|---|")
    for report in reports:
        print(report.line())


if __name__ == "__main__":
    main()
