"""Response cache keyed by the image bytes' hash: repeated uploads skip decode and inference."""

from __future__ import annotations

import hashlib

from cachetools import LRUCache

from resnet_serve.shared.jobs import Result
from resnet_serve.shared.metrics import Metrics

# (model, the upload's digest, top_k, whether the full probability vector is kept)
Key = tuple[str, str, int, bool]


class ResponseCache:
    def __init__(self, entries: int, metrics: Metrics) -> None:
        self._cache: LRUCache[Key, Result] | None = (
            LRUCache(maxsize=entries) if entries > 0 else None
        )
        self._metrics = metrics

    @property
    def enabled(self) -> bool:
        return self._cache is not None

    @staticmethod
    def key(model: str, data: bytes, top_k: int, full_scores: bool = False) -> Key:
        return model, hashlib.blake2b(data, digest_size=20).hexdigest(), top_k, full_scores

    def get(self, key: Key, version: str) -> Result | None:
        if self._cache is None:
            return None
        result = self._cache.get(key)
        hit = result is not None and result.version == version
        self._metrics.cache_lookups.labels("hit" if hit else "miss").inc()
        return result if hit else None

    def put(self, key: Key, result: Result) -> None:
        if self._cache is not None:
            self._cache[key] = result
