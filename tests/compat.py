"""What a rolling upgrade relies on, read from the code: the OpenAPI documents, every
Redis key name, the wire format's fields, every metric name with its labels and every
`RESNET_SERVE_*` setting name. tests/golden/ holds the snapshot; the compatibility test
allows additions, and removals only where tests/golden/removals.json records them with
the reason (so a removal is a decision, never an accident).

    python -m tests.compat --write    # after an intended addition: refresh the snapshot
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden"
REMOVALS = GOLDEN / "removals.json"


def recorded_removals() -> dict[str, dict[str, str]]:
    """Per snapshot: path of each deliberately removed entry -> why it went."""
    return json.loads(REMOVALS.read_text())


# Prose and samples in the OpenAPI documents: rewording them breaks no client.
PROSE = {"description", "summary", "examples", "example", "tags"}  # tags group the docs


def missing(golden: Any, current: Any, path: str = "") -> list[str]:
    """Where `current` drops or changes something `golden` has (dict keys may be added;
    lists of names may grow; prose may change; any other value must be equal)."""
    if isinstance(golden, dict) and isinstance(current, dict):
        return [
            problem
            for key, value in golden.items()
            if key not in PROSE
            for problem in (
                missing(value, current[key], f"{path}/{key}")
                if key in current
                else [f"{path}/{key} is gone"]
            )
        ]
    if (
        isinstance(golden, list)
        and isinstance(current, list)
        and path.endswith(
            ("job_fields", "job_header", "reply", "reply_result", "reply_error", "model_info")
        )
    ):
        return [f"{path}: {name!r} is gone" for name in golden if name not in current]
    if golden != current:
        return [f"{path}: {json.dumps(golden)[:200]} became {json.dumps(current)[:200]}"]
    return []


def unrecorded(name: str, golden: Any, current: Any) -> list[str]:
    """What `current` drops or changes that removals.json does not record for `name`."""
    if name == "settings.json":  # a list of names: may grow
        problems = [f"/{gone} is gone" for gone in sorted(set(golden) - set(current))]
    else:
        problems = missing(golden, current)
    recorded = recorded_removals().get(name, {})
    return [p for p in problems if not any(p.startswith(f"{path} ") for path in recorded)]


def openapi(mode: str) -> dict[str, Any]:
    from resnet_serve.api.app import create_app
    from resnet_serve.shared.metrics import Metrics
    from resnet_serve.shared.settings import load_settings

    settings = load_settings()
    metrics = Metrics()
    if mode == "distributed":  # builds clients only; connects to nothing
        from resnet_serve.api.broker.redis_broker import RedisBroker

        broker: Any = RedisBroker(settings, metrics)
    else:
        from resnet_serve.worker.inprocess import InProcessBroker

        broker = InProcessBroker(settings, metrics)
    return create_app(settings, broker, metrics).openapi()


def redis_keys() -> dict[str, Any]:
    """Each key-naming method called with placeholder arguments, and the constants."""
    from resnet_serve.shared import keys

    names: dict[str, Any] = {}
    space = keys.Keys("NS")
    for name, method in inspect.getmembers(space, inspect.ismethod):
        if name.startswith("_"):
            continue
        args = [f"<{p}>" for p in inspect.signature(method).parameters]
        names[name] = method(*args)
    for name, value in vars(keys).items():
        if name.isupper() and isinstance(value, str):  # TTLs may change, names not
            names[name] = value
    return names


def wire() -> dict[str, Any]:
    """The field names of a job message, its header, a reply and a model description."""
    import numpy as np

    from resnet_serve.shared import wire as w
    from resnet_serve.shared.errors import QueueFull
    from resnet_serve.shared.jobs import Job, ModelInfo, Prediction, Result

    job = Job(
        request_id="r",
        model="m",
        image=np.zeros((2, 2, 3), np.uint8),
        top_k=3,
        deadline=1.0,
    )
    fields = w.encode_job(job, "reply")
    header = w.decode_header(fields)
    result = Result(
        model="m",
        version="1",
        predictions=[Prediction(index=1, label="x", score=0.5)],
        queue_ms=0.0,
        inference_ms=0.0,
        batch_size=1,
    )
    info = ModelInfo(
        name="m",
        version="1",
        engine="e",
        precision="p",
        input_size=224,
        resize_size=256,
        num_classes=1000,
    )
    return {
        "version": w.VERSION,
        "job_fields": sorted(f.decode() for f in fields),
        "job_header": sorted(header),
        "reply_result": sorted(json.loads(w.encode_reply("j", result))["result"]),
        "reply": sorted(json.loads(w.encode_reply("j", result))),
        "reply_error": sorted(json.loads(w.encode_reply("j", QueueFull("x")))),
        "model_info": sorted(json.loads(w.encode_model_info(info))),
    }


def metrics() -> dict[str, Any]:
    """Every metric family: its type and label names."""
    from prometheus_client.metrics import MetricWrapperBase

    from resnet_serve.shared.metrics import Metrics

    families: dict[str, Any] = {}
    for metric in vars(Metrics()).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                families[family.name] = {
                    "type": family.type,
                    "labels": list(metric._labelnames),
                }
    return families


def grpc_wire() -> dict[str, Any]:
    """The gRPC methods served, and the field numbers of every message they carry."""
    from google.protobuf.descriptor import Descriptor

    from resnet_serve.api.grpc.protocol import SERVICE
    from resnet_serve.api.grpc.server import SERVED

    messages: dict[str, dict[str, Any]] = {}

    def record(message: Descriptor) -> None:
        if message.full_name in messages:
            return
        messages[message.full_name] = {}
        for field in message.fields:
            messages[message.full_name][field.name] = [field.number, field.type, field.is_repeated]
            if field.message_type is not None:
                record(field.message_type)

    methods = {}
    for name in SERVED:
        method = SERVICE.methods_by_name[name]
        methods[name] = {
            "path": f"/{SERVICE.full_name}/{name}",
            "input": method.input_type.full_name,
            "output": method.output_type.full_name,
            "streams": [method.client_streaming, method.server_streaming],
        }
        record(method.input_type)
        record(method.output_type)
    return {"methods": methods, "messages": messages}


def settings() -> list[str]:
    from resnet_serve.shared.settings import ENV_PREFIX, Settings

    return sorted(ENV_PREFIX + name.upper() for name in Settings.model_fields)


SNAPSHOTS = {
    "openapi-standalone.json": lambda: openapi("standalone"),
    "openapi-distributed.json": lambda: openapi("distributed"),
    "redis-keys.json": redis_keys,
    "wire.json": wire,
    "metrics.json": metrics,
    "grpc-wire.json": grpc_wire,
    "settings.json": settings,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write tests/golden/")
    args = parser.parse_args()
    for name, take in SNAPSHOTS.items():
        text = json.dumps(take(), indent=1, sort_keys=True) + "\n"
        gone = unrecorded(name, json.loads((GOLDEN / name).read_text()), json.loads(text))
        if args.write and gone:
            print(f"{name}: not written; record each removal in {REMOVALS.name}: {gone}")
            continue
        if args.write:
            (GOLDEN / name).write_text(text)
        print(f"{name}: {len(text)} bytes")


if __name__ == "__main__":
    main()
