"""Response cache keyed by the image bytes' hash: repeated uploads skip decode and inference."""

from __future__ import annotations

import hashlib

from cachetools import LRUCache

from resnet_serve.shared.jobs import Result
from resnet_serve.shared.metrics import Metrics


class ResponseCache:
    def __init__(self, entries: int, metrics: Metrics) -> None:
        self._cache: LRUCache[tuple[str, str, int], Result] | None = (
            LRUCache(maxsize=entries) if entries > 0 else None
        )
        self._metrics = metrics

    @property
    def enabled(self) -> bool:
        return self._cache is not None

    @staticmethod
    def key(model: str, data: bytes, top_k: int) -> tuple[str, str, int]:
        return model, hashlib.blake2b(data, digest_size=20).hexdigest(), top_k

    def get(self, key: tuple[str, str, int], version: str) -> Result | None:
        if self._cache is None:
            return None
        result = self._cache.get(key)
        hit = result is not None and result.version == version
        self._metrics.cache_lookups.labels("hit" if hit else "miss").inc()
        return result if hit else None

    def put(self, key: tuple[str, str, int], result: Result) -> None:
        if self._cache is not None:
            self._cache[key] = result
