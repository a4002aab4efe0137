"""The contract for held work (docs/architecture.md, "Held work"), against real
redis-server, `api` and `worker` processes. Workers run the TEST-ONLY fault-injecting
engine (fixed batch time, failures on demand), so timings hold on a loaded machine."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.cluster import (
    MODEL,
    NAMESPACE,
    classify,
    classify_all,
    cluster,
    fault_settings,
    gateway,
    gateway_id,
    images,
    pending_count,
    set_fault,
    wait_until,
    workers,
)
from tests.load import Load, by_code, in_flight_at
from tests.redis_server import RedisServer
from tests.servers import server_env, start_worker


def _batches_run(*metrics_sources: object) -> float:
    return sum(w.metric("resnet_serve_batch_size_sum") for w in metrics_sources)  # type: ignore[attr-defined]


def test_a_dead_workers_jobs_are_reclaimed_under_load_and_answered(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """32 clients keep both workers' prefetch queues full; one worker is
    SIGKILLed; its jobs are claimed by the survivor as room frees, long before the load
    ends, and every request is answered 200."""
    settings = fault_settings(200, max_batch="4", visibility_timeout_s="1", request_timeout_s="30")
    with cluster(home, logs, redis_server, ("victim", "survivor"), **settings) as (
        server,
        (victim, survivor),
    ):
        load = Load(server.url, images(64, seed=11), clients=32).start()
        wait_until(lambda: load.sent >= 32 and pending_count(redis_server, "victim") > 0, 60)
        killed_at = time.monotonic()
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        time.sleep(12)  # the load goes on well past the visibility timeout
        load_ended = time.monotonic()
        outcomes = load.stop()
        reclaimed = survivor.metric("resnet_serve_reclaimed_jobs_total")
    assert by_code(outcomes) == {}, by_code(outcomes)
    held = in_flight_at(outcomes, killed_at)
    assert held
    last_answer = max(o.answered_at for o in held)
    # Answered while the load still ran: within the visibility timeout, one reclaim
    # period and the queue ahead of them, not when the load ended.
    assert last_answer - killed_at < 8, last_answer - killed_at
    assert last_answer < load_ended
    assert reclaimed > 0


def test_slow_batches_keep_their_leases_and_run_once(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """Jobs wait in the prefetch queue behind a 1.5 s batch and then run
    1.5 s, far past the 2.5 s visibility timeout; leases keep them: none reclaimed, none
    run twice, none dead-lettered."""
    settings = fault_settings(1500, max_batch="8", visibility_timeout_s="2.5")
    settings["request_timeout_s"] = "40"
    with cluster(home, logs, redis_server, ("slow1", "slow2"), **settings) as (server, pool):
        responses = classify_all(server, images(32, seed=12))
        assert [r.status_code for r in responses] == [200] * 32
        assert _batches_run(*pool) == 32  # every job inferred exactly once
        assert sum(w.metric("resnet_serve_reclaimed_jobs_total") for w in pool) == 0
        assert sum(w.metric("resnet_serve_dead_lettered_total") for w in pool) == 0
        assert redis_server.client().xlen(f"{NAMESPACE}:dead:{MODEL}") == 0


def test_settings_that_cannot_hold_are_refused_at_start(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    settings = fault_settings(1000, max_batch="2", visibility_timeout_s="1")
    worker = start_worker(home, logs, redis_server.url, "hopeless", **settings)
    assert worker.process.wait(timeout=60) == 2
    assert "visibility_timeout_s is 1 s, but a batch of 2 takes" in worker.log()
    assert "set visibility_timeout_s to at least" in worker.log()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_requests_in_flight_fail_fast_when_redis_is_lost(
    home: Path, logs: Path, redis_server: RedisServer, how: signal.Signals
) -> None:
    """Under load (16 clients, 0.5 s batches), every request in flight when
    Redis dies or freezes answers within 1.5 s (503 broker_unavailable), not at its 20 s
    deadline; the gateway is ready again once Redis is back."""
    settings = fault_settings(500, request_timeout_s="20", visibility_timeout_s="4")
    process = redis_server.process
    assert process is not None
    with cluster(home, logs, redis_server, ("w",), **settings) as (server, _):
        load = Load(server.url, images(32, seed=13), clients=16).start()
        wait_until(lambda: load.sent >= 16 and pending_count(redis_server) > 0, 30, "load")
        lost_at = time.monotonic()
        process.send_signal(how)
        try:
            time.sleep(2.5)
        finally:
            if how == signal.SIGSTOP:
                process.send_signal(signal.SIGCONT)
            else:
                process.wait()
                redis_server.start()
        outcomes = load.stop()
        wait_until(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, 30, "readyz")
        assert classify(server, images(1)[0]).status_code == 200
    held = in_flight_at(outcomes, lost_at)
    assert held
    assert max(o.answered_at for o in held) - lost_at <= 1.5
    assert {o.code for o in held if o.status != 200} <= {"broker_unavailable"}
    assert all(o.status in (200, 503) for o in outcomes)


@pytest.mark.parametrize("mode", ["fail", "fatal", "hang"])
def test_a_broken_engine_exits_non_zero_and_its_jobs_are_answered_by_another_worker(
    home: Path, logs: Path, redis_server: RedisServer, tmp_path: Path, mode: str
) -> None:
    """Every job failing alone too ("fail"), a fatal error class
    ("fatal"), or an inference that never returns ("hang", caught by the watchdog): the
    worker hands its jobs back and exits non-zero; another worker answers them."""
    control = tmp_path / "fault.json"
    set_fault(control, "ok")
    common = {"visibility_timeout_s": "1", "request_timeout_s": "40", "max_batch": "4"}
    broken_settings = fault_settings(
        100, FAULT_ENGINE_CONTROL_FILE=str(control), inference_timeout_s="2",
        max_batch_wait_ms="300",
        **common,
    )  # fmt: skip
    with (
        workers(home, logs, redis_server, "broken", **broken_settings) as (broken,),
        gateway(home, logs, redis_server, **common) as server,
    ):
        set_fault(control, mode)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(classify, server, d) for d in images(8, seed=14)]
            assert broken.process.wait(timeout=60) == 3, broken.log()
            assert "handed" in broken.log()
            assert "jobs back" in broken.log()
            assert pending_count(redis_server) > 0  # held by nobody until reclaimed
            with workers(home, logs, redis_server, "healthy", **fault_settings(100, **common)) as (
                healthy,
            ):
                responses = [f.result() for f in futures]
                assert healthy.metric("resnet_serve_reclaimed_jobs_total") > 0
        assert [r.status_code for r in responses] == [200] * 8
    if mode == "fail":
        assert broken.log().count("retrying one by one") <= 2  # within two batches
    if mode == "hang":
        assert "inference hung" in broken.log()


def test_liveness_is_per_worker_and_reports_progress(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    settings = fault_settings(50, heartbeat_interval_s="0.5")
    env = server_env(home, redis_url=redis_server.url, heartbeat_interval_s="0.5")
    check = [sys.executable, "-m", "resnet_serve", "worker", "--check"]

    def probe(*args: str) -> int:
        return subprocess.run([*check, *args], env=env, check=False).returncode

    with workers(home, logs, redis_server, "frozen", "fine", **settings) as (frozen, _):
        assert probe() == 0
        frozen.process.send_signal(signal.SIGSTOP)  # makes no progress at all
        try:
            # Stale once older than three intervals and the 5 s floor.
            wait_until(lambda: probe("--worker-id", "frozen") == 1, 20, "a stale liveness file")
            assert probe("--worker-id", "fine") == 0
            assert probe() == 1  # one worker on this host is stuck: not masked
        finally:
            frozen.process.send_signal(signal.SIGCONT)


def test_gateways_use_a_registry_and_their_configured_models_never_scans(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """No SCAN; the model stays served and the gateway ready through a
    Redis flush and with zero workers; workers re-register."""
    client = redis_server.client()
    settings = fault_settings(50, heartbeat_interval_s="0.5")
    with cluster(home, logs, redis_server, ("w",), **settings) as (server, (worker,)):
        client.config_resetstat()
        assert classify(server, images(1)[0]).status_code == 200
        wait_until(lambda: server.metric("resnet_serve_workers", model=MODEL) == 1, 10)
        time.sleep(2)
        assert "cmdstat_scan" not in client.info("commandstats")
        assert client.ttl(f"{NAMESPACE}:workers:{MODEL}") > 0
        client.flushall()
        for _ in range(10):
            assert httpx.get(f"{server.url}/readyz").status_code == 200
            time.sleep(0.2)
        wait_until(lambda: classify(server, images(1)[0]).status_code == 200, 30, "served")
        wait_until(lambda: client.zcard(f"{NAMESPACE}:workers:{MODEL}") == 1, 10)
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()
        wait_until(lambda: server.metric("resnet_serve_workers", model=MODEL) == 0, 10)
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 200
        assert [m["name"] for m in httpx.get(f"{server.url}/v1/models").json()] == [MODEL]
        assert "cmdstat_scan" not in client.info("commandstats")


def test_readiness_turns_red_while_the_reply_dispatcher_fails(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """A dispatcher that cannot read its replies (here its reply key holds
    the wrong type) makes /readyz 503 while Redis itself answers; it recovers."""
    client = redis_server.client()
    with cluster(home, logs, redis_server, ("w",), **fault_settings(50)) as (server, _):
        reply_key = f"{NAMESPACE}:reply:{gateway_id(server)}"
        client.set(reply_key, "not a list")

        def readiness() -> int:
            return httpx.get(f"{server.url}/readyz").status_code

        wait_until(lambda: readiness() == 503, 15, "not ready")
        body = httpx.get(f"{server.url}/readyz").json()
        assert body["error"]["code"] == "not_ready"
        assert "dispatcher" in body["error"]["message"]
        client.delete(reply_key)
        wait_until(lambda: readiness() == 200, 20, "ready again")
        assert classify(server, images(1)[0]).status_code == 200


def test_deadlines_are_judged_from_the_budget_on_redis_clock(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """A gateway whose clock is an hour off (its absolute deadline says the
    job expired long ago) still gets its job run, because the worker judges the remaining
    budget from when Redis added the job; a spent budget is 504 whatever the clock says."""
    client = redis_server.client()
    with cluster(home, logs, redis_server, ("w",), **fault_settings(50)):
        for name, deadline, budget in (("skewed", -3600, 30.0), ("spent", 3600, 0.0)):
            header = {
                "v": 1,
                "job_id": name,
                "request_id": name,
                "model": MODEL,
                "shape": [224, 224, 3],
                "dtype": "uint8",
                "top_k": 3,
                "deadline": time.time() + deadline,
                "enqueued_at": time.time() + deadline,
                "reply_to": f"test-replies-{name}",
                "budget_s": budget,
            }
            tensor = bytes(224 * 224 * 3)
            client.xadd(
                f"{NAMESPACE}:jobs:{MODEL}", {"header": json.dumps(header), "tensor": tensor}
            )
        skewed = client.blpop(["test-replies-skewed"], timeout=20)
        spent = client.blpop(["test-replies-spent"], timeout=20)
    assert skewed is not None
    assert "result" in json.loads(skewed[1])
    assert spent is not None
    assert json.loads(spent[1])["error"]["code"] == "deadline_exceeded"


def test_out_of_memory_at_warm_up_serves_smaller_batches_and_says_so(
    home: Path, logs: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The accelerator policy where an operator sees it: the worker starts, its log says
    why, and its `/metrics` shows the largest batch it really runs."""
    control = tmp_path / "fault.json"
    control.write_text(json.dumps({"oom_above": 3}))
    settings = fault_settings(20, FAULT_ENGINE_CONTROL_FILE=str(control), max_batch="8")
    with workers(home, logs, redis_server, "small", **settings) as (worker,):
        assert worker.metric("resnet_serve_max_batch") == 3
        assert "out of memory at batch 4 during warm-up" in worker.log()
