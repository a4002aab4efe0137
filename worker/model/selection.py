"""`auto` by measurement on the CPU that serves: every candidate this install can run
here, the reduced-precision ones judged by the accuracy gate against fp32, the passing
ones timed in interleaved rounds at the serving batch size, and the choice recorded with
its reason. No torch here."""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from resnet_serve.shared.cpus import thread_count
from resnet_serve.shared.settings import Settings
from resnet_serve.worker.engines.base import Engine
from resnet_serve.worker.engines.registry import open_engine
from resnet_serve.worker.model.accuracy_gate import judge
from resnet_serve.worker.model.artifacts import (
    FP32_KEY,
    INT8_KEY,
    Accuracy,
    ArtifactEntry,
    BuildError,
    Candidate,
    CpuFingerprint,
    Manifest,
    Selection,
    artifact_key,
)

log = logging.getLogger(__name__)

_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
TIE = 0.10  # speeds within 10% of the fastest are a tie, won by the smaller accuracy cost
ROUNDS = 5


def fingerprint(threads: int = 0) -> CpuFingerprint:
    """This CPU's model name, the ISA extensions engines care about, and usable cores."""
    name, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return CpuFingerprint(
        model_name=name, flags=[f for f in _ISA if f in flags], cores=thread_count(threads)
    )


def candidate_keys(manifest: Manifest, cpu: CpuFingerprint) -> list[str]:
    """What this install can run on this CPU, from what the repository holds."""
    keys = [FP32_KEY] if FP32_KEY in manifest.artifacts else []
    if importlib.util.find_spec("openvino") is None:
        return keys
    if keys:
        keys.append(artifact_key("openvino", "fp32", "cpu"))
        if cpu.native_bf16:
            keys.append(artifact_key("openvino", "bf16", "cpu"))
    if INT8_KEY in manifest.artifacts:
        keys.append(INT8_KEY)
    return keys


def entry_for(manifest: Manifest, key: str) -> ArtifactEntry | None:
    """The manifest's entry for `key`; OpenVINO f32 and bf16 run the fp32 ONNX file."""
    if key in manifest.artifacts:
        return manifest.artifacts[key]
    fp32 = manifest.artifacts.get(FP32_KEY)
    backend, precision, _ = key.split("-")
    if fp32 is None or backend != "openvino" or precision not in {"fp32", "bf16"}:
        return None
    return fp32.model_copy(update={"backend": "openvino", "precision": precision, "device": "cpu"})


def _open(directory: Path, entry: ArtifactEntry, threads: int) -> Engine:
    return open_engine(
        directory / entry.file,
        backend=entry.backend,
        precision=entry.precision,
        device="cpu",
        threads=threads,
    )


def _scores(engine: Engine, crops: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([engine.infer(crops[i : i + batch]) for i in range(0, len(crops), batch)])


def time_rounds(
    engines: dict[str, Engine], batch: np.ndarray, *, rounds: int = ROUNDS, min_s: float = 0.3
) -> dict[str, list[float]]:
    """img/s per engine per round; the order rotates each round so that no engine always
    runs right after another's caches were warmed (2 shared cores are noisy)."""
    keys = list(engines)
    for key in keys:
        engines[key].infer(batch)  # first-call allocations are not timed
    out: dict[str, list[float]] = {key: [] for key in keys}
    for r in range(rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            calls, start = 0, time.perf_counter()
            while calls < 2 or time.perf_counter() - start < min_s:
                engines[key].infer(batch)
                calls += 1
            out[key].append(calls * len(batch) / (time.perf_counter() - start))
    return out


def pick(candidates: list[Candidate]) -> tuple[Candidate, str]:
    """The fastest passing candidate; a tie goes to the smaller accuracy cost, so two
    starts on one machine do not flip-flop. A tie: within 10% of the fastest, or as
    fast as it in any one round (rounds are compared pairwise: the machine's load drifts
    between rounds, and both ran in each)."""
    passing = [c for c in candidates if c.passed and c.img_s]
    fastest = max(passing, key=lambda c: c.speed)
    ties = [
        c
        for c in passing
        if c.speed >= (1 - TIE) * fastest.speed
        or any(mine >= theirs for mine, theirs in zip(c.img_s, fastest.img_s, strict=True))
    ]
    chosen = min(ties, key=lambda c: (c.drop_pt, -c.speed))
    reference = next((c for c in passing if c.key == FP32_KEY), chosen)
    by = f", {chosen.speed / reference.speed:.2f}x {reference.label}" if reference.speed else ""
    others = ", ".join(f"{c.label} {c.speed:.0f}" for c in passing if c is not chosen)
    cost = f"estimated accuracy cost {chosen.drop_pt:.2f} pt" if chosen.drop_pt else "fp32"
    tie = "; a tie with faster ones, won on accuracy" if chosen is not fastest else ""
    failed = "; ".join(f"{c.label} not passed: {c.reason}" for c in candidates if not c.passed)
    return chosen, (
        f"{chosen.label} {chosen.speed:.0f} img/s{by}{tie}; over {others or 'nothing'} "
        f"img/s; {cost}" + (f"; {failed}" if failed else "")
    )


Holdout = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # crops, photo of each, labels
JudgeFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], Accuracy]


def measure(
    directory: Path,
    manifest: Manifest,
    *,
    holdout: Holdout | None,
    judge_fn: JudgeFn,
    threads: int,
    max_batch: int,
) -> Selection:
    """Gate and time every candidate here. `holdout`: (crops, photo of each, labels) to
    judge reduced precisions on this CPU; None keeps INT8's recorded verdict and leaves
    bf16 out (it has none)."""
    cpu = fingerprint(threads)
    engines = _open_candidates(directory, manifest, cpu, threads, gate_here=holdout is not None)
    try:
        candidates = [
            Candidate(key=key, engine=engine.name, precision=engine.precision, passed=True)
            for key, engine in engines.items()
        ]
        reduced = [c for c in candidates if c.precision != "fp32"]
        reference = None
        if holdout is not None and reduced:
            reference = _scores(engines[FP32_KEY], holdout[0], max_batch)
        for candidate in reduced:
            if holdout is None or reference is None:
                _recorded_verdict(candidate, manifest)
                continue
            crops, owner, labels = holdout
            scores = _scores(engines[candidate.key], crops, max_batch)
            verdict = judge_fn(reference, scores, owner, labels)
            candidate.passed, candidate.reason = verdict.passed, verdict.reason
            candidate.drop_pt = verdict.drop_pt
        passing = {c.key: engines[c.key] for c in candidates if c.passed}
        batch = np.zeros((max_batch, manifest.input_size, manifest.input_size, 3), np.uint8)
        for key, speeds in time_rounds(passing, batch).items():
            next(c for c in candidates if c.key == key).img_s = [round(s, 1) for s in speeds]
    finally:
        for engine in engines.values():
            engine.close()
    chosen, reason = pick(candidates)
    return Selection(
        cpu=cpu,
        threads=thread_count(threads),
        max_batch=max_batch,
        candidates=candidates,
        chosen=chosen.key,
        reason=reason,
    )


def _open_candidates(
    directory: Path, manifest: Manifest, cpu: CpuFingerprint, threads: int, *, gate_here: bool
) -> dict[str, Engine]:
    engines: dict[str, Engine] = {}
    try:
        for key in candidate_keys(manifest, cpu):
            entry = entry_for(manifest, key)
            if entry is None or (entry.precision == "bf16" and not gate_here):
                continue  # bf16 has no recorded verdict to fall back on
            engines[key] = _open(directory, entry, threads)
    except Exception:
        for engine in engines.values():
            engine.close()
        raise
    return engines


def _recorded_verdict(candidate: Candidate, manifest: Manifest) -> None:
    """Without photos to gate with here: INT8's verdict as export recorded it."""
    verdict = manifest.artifacts[candidate.key].accuracy
    if verdict is None:
        candidate.passed, candidate.reason = False, "no recorded accuracy gate"
        return
    candidate.passed, candidate.drop_pt = verdict.passed, verdict.drop_pt
    candidate.reason = f"{verdict.reason} (recorded at export)"


def holdout_for(settings: Settings, manifest: Manifest) -> Holdout | None:
    """The gate's held-out crops (the shipped photos, the same on every install, unless
    `calibration_dir` names others), or None where those cannot be read here: reduced
    precisions then keep their recorded verdicts."""
    from resnet_serve.worker.model.calibration import load_calibration

    try:
        data = load_calibration(
            settings.calibration_dir,
            size=manifest.input_size,
            calibration_crops=8,
            holdout_crops=settings.holdout_crops,
            labels=manifest.labels,
        )
    except BuildError as exc:
        log.warning("no held-out photos to gate with here (%s): recorded verdicts kept", exc)
        return None
    return data.holdout, data.holdout_owner, data.holdout_labels


def select(settings: Settings, directory: Path, manifest: Manifest) -> Selection:
    """Measure here, with the serving settings' threads and largest batch."""
    random_weights = manifest.weights.source == "random"

    def judged(
        reference: np.ndarray, candidate: np.ndarray, owner: np.ndarray, labels: np.ndarray | None
    ) -> Accuracy:
        return judge(
            reference,
            candidate,
            owner,
            labels=labels,
            max_drop_pt=settings.max_accuracy_drop_pt,
            random_weights=random_weights,
        )

    return measure(
        directory,
        manifest,
        # Random weights never pass: no photos are scored to say so again.
        holdout=None if random_weights else holdout_for(settings, manifest),
        judge_fn=judged,
        threads=settings.inference_threads,
        max_batch=settings.max_batch,
    )


def cache_path(settings: Settings, manifest: Manifest, cpu: CpuFingerprint) -> Path:
    """Where a serving process keeps a measurement made on another CPU than export's:
    under the home directory, since a baked repository stays read-only."""
    weights = (manifest.weights.sha256 or manifest.weights.source)[:12]
    name = f"{manifest.version}-{weights}-{cpu.digest}.json"
    return settings.home_dir / "selections" / manifest.name / name


def recorded(settings: Settings, manifest: Manifest) -> Selection | None:
    """A measurement made on this CPU (model, ISA extensions, usable cores), if any."""
    cpu = fingerprint(settings.inference_threads)

    def fits(selection: Selection | None) -> bool:
        return (
            selection is not None
            and selection.cpu == cpu
            and entry_for(manifest, selection.chosen) is not None
        )

    if fits(manifest.selection):
        return manifest.selection
    path = cache_path(settings, manifest, cpu)
    try:
        cached = Selection.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None
    return cached if fits(cached) else None
