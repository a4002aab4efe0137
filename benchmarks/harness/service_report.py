"""bench_service's report: the figures of one run, the targets, and the Markdown."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.harness.inprocess import InProcess
from benchmarks.harness.load import Load
from benchmarks.harness.report import Check


@dataclass
class Report:
    settings: dict[str, Any]
    machine: dict[str, Any]
    image_sets: dict[str, dict[str, Any]]
    inprocess: InProcess
    loads: list[Load]
    cold_starts_s: list[float]
    rss_peak_mb: float
    quiet_wait_s: float
    checks: list[Check] = field(default_factory=list)

    def load(self, image_set: str, concurrency: int) -> Load | None:
        return next(
            (x for x in self.loads if x.image_set == image_set and x.concurrency == concurrency),
            None,
        )


def build_checks(report: Report) -> list[Check]:
    ip = report.inprocess
    checks = []
    for key, title in (("imagenet", "ImageNet-sized"), ("camera", "3000x2000")):
        c32 = report.load(key, 32)
        if c32 is not None and key in ip.ceiling:
            ratio = c32.req_per_s / ip.ceiling[key]
            checks.append(Check(f"service@c32 / in-process ceiling ({title})", ratio, 0.85, True))
    if ip.eager_b1:
        batch = report.settings["max_batch"]
        ratio = ip.engine_batch / ip.eager_b1
        checks.append(Check(f"engine@batch {batch} / eager fp32 batch 1", ratio, 2.5, True))
    c1, c8 = report.load("imagenet", 1), report.load("imagenet", 8)
    if c1 is not None and c8 is not None:
        checks.append(Check("p99@c8 / p50@c1 (ImageNet-sized)", c8.p99_ms / c1.p50_ms, 3, False))
    cold = statistics.median(report.cold_starts_s)
    checks.append(Check("cold start (median)", cold, 10, False, " s"))
    checks.append(Check("server peak RSS (VmHWM)", report.rss_peak_mb, 750, False, " MB"))
    imagenet_c32, camera_c8 = report.load("imagenet", 32), report.load("camera", 8)
    if imagenet_c32 is not None:
        checks.append(Check("req/s ImageNet-sized @c32", imagenet_c32.req_per_s, 72, True))
    if camera_c8 is not None:
        checks.append(Check("req/s 3000x2000 @c8", camera_c8.req_per_s, 33, True))
    if c1 is not None:
        checks.append(Check("p50@c1 (ImageNet-sized)", c1.p50_ms, 30, False, " ms"))
    return checks


def _header(report: Report) -> list[str]:
    s, m = report.settings, report.machine
    client = report.loads[0].client if report.loads else "-"
    sets = "; ".join(
        f"{x['title']}: {x['count']} JPEGs, mean {x['mean_kib']:.0f} KiB"
        for x in report.image_sets.values()
    )
    return [
        "## resnet-serve benchmark",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, AVX-512 {m['avx512']}, "
        f"Python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}",
        f"- served: {report.inprocess.engine} (engine setting {s['engine']}), "
        f"max_batch {s['max_batch']}, max_batch_wait_ms {s['max_batch_wait_ms']}, "
        f"decode_threads {s['decode_threads']}, inference_threads {s['inference_threads']} "
        "(0 = one per core), response cache off, random weights",
        f"- images: {sets}",
        f"- load generator: {client}; 'other cores' = CPU used by processes outside this "
        f"benchmark during the measurement (waited {report.quiet_wait_s:.0f} s for quiet); "
        "decode, queue and infer columns are means of the server's own histograms over the "
        "run (wall time, so they include waiting for a core)",
    ]


def _inprocess_table(report: Report) -> list[str]:
    ip, s = report.inprocess, report.settings

    def noise(prefix: str) -> float:
        """The worst foreign load over the measurements whose name starts with `prefix`."""
        return max((v for k, v in ip.foreign_cores.items() if k.startswith(prefix)), default=0)

    rows = [
        ("eager fp32 PyTorch, batch 1 (reference)", ip.eager_b1, noise("eager")),
        ("served engine alone, batch 1", ip.engine_b1, noise("engine_b1")),
        (f"served engine alone, batch {s['max_batch']}", ip.engine_batch, noise("engine_batch")),
    ]
    for key, info in report.image_sets.items():
        label = f"decode+crop alone, {s['decode_threads']} threads, {info['title']}"
        rows.append((label, ip.decode_only[key], noise(f"decode/{key}")))
    for key, info in report.image_sets.items():
        runs = " / ".join(f"{x:.1f}" for x in ip.ceiling_runs.get(key, []))
        label = (
            f"**ceiling: decode pool + engine pipelined, {info['title']}** "
            f"(mean of right before / after its c=32 run: {runs})"
        )
        rows.append((label, ip.ceiling[key], noise(f"ceiling/{key}/")))
    lines = [
        "### In process, no HTTP",
        "",
        "| measurement | img/s | other cores |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {value:.1f} | {other:.2f} |" for label, value, other in rows]
    return lines


def _service_table(report: Report) -> list[str]:
    lines = [
        "### Service over HTTP: raw JPEG body, POST /v1/classify",
        "",
        "| images | conc | req/s | p50 ms | p90 ms | p99 ms | errors | mean batch "
        "| decode ms | queue ms | infer ms/batch | server cores (event loop) "
        "| server CPU ms/req | client cores | other cores | RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in report.loads:
        b = x.breakdown
        lines.append(
            f"| {report.image_sets[x.image_set]['title']} | {x.concurrency} | "
            f"{x.req_per_s:.1f} | {x.p50_ms:.1f} | {x.p90_ms:.1f} | {x.p99_ms:.1f} | "
            f"{x.errors} | {b['batch_size']:.1f} | {b['decode_ms']:.1f} | "
            f"{b['queue_wait_ms']:.1f} | {b['inference_ms_per_batch']:.1f} | "
            f"{x.server_cpu_cores:.2f} ({x.server_loop_cpu_cores:.2f}) | "
            f"{x.server_cpu_ms_per_request:.1f} | "
            f"{x.client_cpu_cores:.2f} | {x.foreign_cores:.2f} | {x.server_rss_mb:.0f} |"
        )
    return lines


def render(report: Report) -> str:
    colds = ", ".join(f"{t:.2f}" for t in report.cold_starts_s)
    return "\n".join(
        [
            *_header(report),
            "",
            *([*_inprocess_table(report), ""] if report.inprocess.eager_b1 else []),
            *_service_table(report),
            "",
            f"Cold start (launch -> /readyz 200, artifact already built): {colds} s. "
            f"Server peak RSS (VmHWM) after all load: {report.rss_peak_mb:.0f} MB.",
            "",
            "### Ratios and targets (all measured in this run)",
            "",
            "| ratio | measured | target | |",
            "|---|---:|---:|---|",
            *(check.row() for check in report.checks),
        ]
    )


def payload(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data, with the derived figures spelt out."""
    data = asdict(report)
    for load, raw in zip(report.loads, data["loads"], strict=True):
        raw["req_per_s"] = load.req_per_s
    for check, raw in zip(report.checks, data["checks"], strict=True):
        raw["passed"] = check.passed
    return data
