"""Every Redis key name, in one place. Keys that can be orphaned carry a TTL (below)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Consumer group all workers of a model share: each job goes to exactly one of them.
WORKER_GROUP = "workers"
# A gateway's reply list outlives the gateway by this much, then Redis drops it.
REPLY_TTL_S = 60
# Model descriptions are refreshed by every worker heartbeat; gateways keep the last one
# they read, and serve the models of their own configuration whatever Redis holds.
MODEL_INFO_TTL_S = 24 * 3600
# Dead letters are kept for inspection, the newest ones only (approximate trim).
DEAD_LETTER_MAXLEN = 10_000
# Bulk jobs: while a gateway writes a job's images, its state and idempotency key live
# this long, so a gateway that dies mid-upload frees the key for a retry.
BULK_UPLOAD_WINDOW_S = 120
# The ledger's total lives in its hash under this field, beside one field per job.
BULK_LEDGER_TOTAL = "_total"


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str

    def jobs(self, model: str) -> str:
        """Stream of jobs for one model; acknowledged entries are deleted at once."""
        return f"{self.namespace}:jobs:{model}"

    def queue_places(self, model: str) -> str:
        """Sorted set: queue places gateways set aside for requests still decoding,
        member -> expiry (ms); expired members are dropped by the next reservation and
        the key has the longest member's TTL. (The key's name predates the word.)"""
        return f"{self.namespace}:slots:{model}"

    def dead_letters(self, model: str) -> str:
        """Stream of jobs that failed `max_deliveries` times (headers and reason only)."""
        return f"{self.namespace}:dead:{model}"

    def cancels(self, model: str) -> str:
        """Pub/sub channel: ids of a model's jobs whose client left; workers skip them."""
        return f"{self.namespace}:cancel:{model}"

    def reply(self, gateway_id: str) -> str:
        """List of results for one gateway instance (TTL `REPLY_TTL_S`, refreshed per push)."""
        return f"{self.namespace}:reply:{gateway_id}"

    def models(self) -> str:
        """Sorted set: model -> when the last registration of a worker serving it lapses
        (ms, Redis clock). Gateways serve the models live workers announce here beside
        their configured ones; lapsed members are pruned by gateways."""
        return f"{self.namespace}:models"

    def model_info(self, model: str) -> str:
        """JSON description of a served model (TTL `MODEL_INFO_TTL_S`)."""
        return f"{self.namespace}:model:{model}"

    def worker_registry(self, model: str) -> str:
        """Sorted set: worker id -> when its registration lapses (ms, Redis clock). Pruned
        by gateways; TTL three heartbeat intervals, refreshed by each heartbeat."""
        return f"{self.namespace}:workers:{model}"

    def worker_stats(self, model: str) -> str:
        """Hash: worker id -> JSON heartbeat (throughput, batches). Same TTL and pruning
        as `worker_registry`."""
        return f"{self.namespace}:workers:{model}:stats"

    # Bulk jobs (arq). Each key's TTL is set where it is written (api/bulk/store.py).

    def bulk_queue(self) -> str:
        """arq's queue (sorted set of job ids); TTL refreshed by every enqueue."""
        return f"{self.namespace}:bulk"

    def bulk_health(self, worker_id: str) -> str:
        """arq's health-check key of one jobs-worker (TTL health interval + 1 s)."""
        return f"{self.namespace}:bulk:health-check:{worker_id}"

    def bulk_job(self, job_id: str) -> str:
        """Hash: a bulk job's state, model, top_k, file names, times."""
        return f"{self.namespace}:bulk:job:{job_id}"

    def bulk_results(self, job_id: str) -> str:
        """Hash: image index -> JSON result or error, written as images finish."""
        return f"{self.namespace}:bulk:job:{job_id}:results"

    def bulk_images(self, job_id: str) -> str:
        """Hash: image index -> uploaded bytes, deleted as each image finishes
        (TTL `bulk_upload_ttl_s`)."""
        return f"{self.namespace}:bulk:job:{job_id}:images"

    def bulk_idempotency(self, key: str) -> str:
        """String: job id and payload digest for a client's Idempotency-Key (hashed, so
        any header value makes a safe key name); same TTL as the job."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        return f"{self.namespace}:bulk:idempotency:{digest}"

    def bulk_ledger_expiry(self) -> str:
        """Sorted set: job id -> when its upload expires, to release expired uploads."""
        return f"{self.namespace}:bulk:uploads:expiry"

    def bulk_ledger_bytes(self) -> str:
        """Hash: job id -> bytes of its upload in Redis, plus the total
        (`BULK_LEDGER_TOTAL`) that `max_bulk_stored_bytes` bounds."""
        return f"{self.namespace}:bulk:uploads:bytes"
