"""The arq queue that carries bulk jobs from gateways to jobs-workers.

arq pickles jobs and results by default; here both sides are given JSON instead, so
nothing in Redis is pickled and any tool can read it. A job carries only its id: the
images and state live in our own keys (api/bulk/store.py).
"""

from __future__ import annotations

import json
from typing import Any

from arq.connections import ArqRedis

from resnet_serve.shared.keys import Keys
from resnet_serve.shared.redis_client import redis_client
from resnet_serve.shared.settings import Settings

FUNCTION = "run_bulk_job"


def dumps(data: dict[str, Any]) -> bytes:
    """arq's job and result records as JSON; a failed job's exception becomes its text."""
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def loads(data: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(data)
    return decoded


def arq_redis(settings: Settings) -> ArqRedis:
    """An arq client on our Redis connection settings (password, TLS, timeouts), with the
    JSON serializer and the namespaced queue. Commands run on it like on any Redis client."""
    pool = redis_client(settings).connection_pool
    return ArqRedis(
        pool,
        job_serializer=dumps,
        job_deserializer=loads,
        default_queue_name=Keys(settings.redis_namespace).bulk_queue(),
    )
