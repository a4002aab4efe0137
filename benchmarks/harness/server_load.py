"""One load run against a live server, with what the server says about it: its CPU
(all threads, and the event loop alone), its memory, and its own histograms."""

from __future__ import annotations

from benchmarks.harness.cpu import NoiseMeter, cpu_seconds, status_kib
from benchmarks.harness.load import Load, LoadClient
from tests.servers import Server


def measure_load(
    server: Server,
    client: LoadClient,
    image_set: str,
    concurrency: int,
    *,
    warmup_s: float,
    duration_s: float,
    meter: NoiseMeter,
) -> Load:
    """Wait for quiet, warm up unmeasured, then one measured run of `duration_s`."""
    meter.wait_quiet()
    client.run(server.url, image_set, concurrency, warmup_s)
    metrics_before = server.samples()
    loop_before, all_before = cpu_seconds(server.pid, server.pid), cpu_seconds(server.pid)
    noise_before = meter.sample()
    load = client.run(server.url, image_set, concurrency, duration_s)
    load.foreign_cores = meter.foreign_cores(noise_before, meter.sample())
    loop_after, all_after = cpu_seconds(server.pid, server.pid), cpu_seconds(server.pid)
    load.breakdown = histogram_means(metrics_before, server.samples())
    load.server_cpu_cores = (all_after - all_before) / load.seconds
    load.server_loop_cpu_cores = (loop_after - loop_before) / load.seconds
    load.server_rss_mb = status_kib(server.pid, "VmRSS") / 1024
    return load


def histogram_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per-run averages from the server's own histograms (deltas of _sum and _count)."""

    def delta(name: str) -> float:
        return sum(v - before.get(k, 0.0) for k, v in after.items() if k.split("{")[0] == name)

    out = {}
    for key, metric, scale in (
        ("decode_ms", "resnet_serve_decode_duration_seconds", 1000),
        ("queue_wait_ms", "resnet_serve_queue_wait_seconds", 1000),
        ("inference_ms_per_batch", "resnet_serve_inference_duration_seconds", 1000),
        ("batch_size", "resnet_serve_batch_size", 1),
        ("server_total_ms", "resnet_serve_request_duration_seconds", 1000),
    ):
        count = delta(metric + "_count")
        out[key] = delta(metric + "_sum") / count * scale if count else float("nan")
    out["decode_busy_s"] = delta("resnet_serve_decode_duration_seconds_sum")
    out["inference_busy_s"] = delta("resnet_serve_inference_duration_seconds_sum")
    out["batches"] = delta("resnet_serve_batch_size_count")
    out["cache_hits"] = sum(
        v - before.get(k, 0.0)
        for k, v in after.items()
        if k.startswith("resnet_serve_cache_lookups_total") and 'result="hit"' in k
    )
    return out
