"""A worker's registration: a sorted set per model that gateways read directly (no
keyspace scans)."""

from __future__ import annotations

import json
import time

from redis.asyncio import Redis

from resnet_serve.shared import keys as k
from resnet_serve.shared.jobs import ModelInfo
from resnet_serve.shared.wire import encode_model_info

# KEYS registry, stats, model description, models; ARGV worker id, stats JSON,
# lapse ms, model description, its TTL s, model. Scores are on Redis's clock, so gateways and
# workers on hosts with different clocks agree on who is alive. Returns Redis's time.
REGISTER = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
redis.call('ZADD', KEYS[4], 'GT', ms + tonumber(ARGV[3]), ARGV[6])
return now
"""

UNREGISTER = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
"""


class Registration:
    def __init__(self, client: Redis, keys: k.Keys, model: str, worker_id: str) -> None:
        self.worker_id = worker_id
        self._keys = [
            keys.worker_registry(model),
            keys.worker_stats(model),
            keys.model_info(model),
            keys.models(),
        ]
        self.model = model
        self._register = client.register_script(REGISTER)
        self._unregister = client.register_script(UNREGISTER)
        # Redis's clock minus this host's (s), measured at each heartbeat.
        self.clock_offset_s = 0.0

    async def register(self, stats: dict[str, object], info: ModelInfo, lapse_s: float) -> None:
        sent = time.time()
        secs, usecs = await self._register(
            keys=self._keys,
            args=[
                self.worker_id,
                json.dumps(stats),
                int(lapse_s * 1000),
                encode_model_info(info),
                k.MODEL_INFO_TTL_S,
                self.model,
            ],
        )
        received = time.time()
        redis_now = int(secs) + int(usecs) / 1e6
        self.clock_offset_s = redis_now - (sent + received) / 2

    async def unregister(self) -> None:
        await self._unregister(keys=self._keys[:2], args=[self.worker_id])
