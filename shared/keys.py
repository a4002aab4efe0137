"""Every Redis key name, in one place. Keys that can be orphaned carry a TTL (below)."""

from __future__ import annotations

from dataclasses import dataclass

# Consumer group all workers of a model share: each job goes to exactly one of them.
WORKER_GROUP = "workers"
# A gateway's reply list outlives the gateway by this much, then Redis drops it.
REPLY_TTL_S = 60
# Model descriptions are refreshed by every worker heartbeat; a model nobody serves for a
# day disappears from gateways.
MODEL_INFO_TTL_S = 24 * 3600
# Dead letters are kept for inspection, the newest ones only (approximate trim).
DEAD_LETTER_MAXLEN = 10_000


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str

    def jobs(self, model: str) -> str:
        """Stream of jobs for one model; acknowledged entries are deleted at once."""
        return f"{self.namespace}:jobs:{model}"

    def dead_letters(self, model: str) -> str:
        """Stream of jobs that failed `max_deliveries` times (headers and reason only)."""
        return f"{self.namespace}:dead:{model}"

    def reply(self, gateway_id: str) -> str:
        """List of results for one gateway instance (TTL `REPLY_TTL_S`, refreshed per push)."""
        return f"{self.namespace}:reply:{gateway_id}"

    def model_info(self, model: str) -> str:
        """JSON description of a served model (TTL `MODEL_INFO_TTL_S`)."""
        return f"{self.namespace}:model:{model}"

    def model_info_pattern(self) -> str:
        return f"{self.namespace}:model:*"

    def worker(self, model: str, worker_id: str) -> str:
        """Heartbeat of one worker, JSON stats (TTL three heartbeat intervals)."""
        return f"{self.namespace}:worker:{model}:{worker_id}"

    def worker_pattern(self, model: str) -> str:
        return f"{self.namespace}:worker:{model}:*"
