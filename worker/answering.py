"""Answering held jobs: results published and their jobs acknowledged in one
owner-checked script (worker/leases.py); a failed inference handed back for another try
until `max_deliveries`, then dead-lettered with an error for its client."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from resnet_serve.shared.errors import DeadLettered, InferenceFailed, ServeError
from resnet_serve.shared.jobs import Job, Result
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.wire import HEADER, MalformedMessage, decode_job, encode_reply
from resnet_serve.worker.leases import Answer, Leases

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Held:
    """A job this worker has taken and not yet answered."""

    entry_id: bytes
    reply_to: str
    deliveries: int


class Answering:
    """Answers for the jobs in `held` (job id -> Held), which the worker shares."""

    def __init__(
        self,
        leases: Leases,
        metrics: Metrics,
        model: str,
        held: dict[str, Held],
        *,
        max_deliveries: int,
        idle_ms: int,
        placeholder_key: str,
    ) -> None:
        self.leases = leases
        self.metrics = metrics
        self.name = model
        self._held = held
        self.max_deliveries = max_deliveries
        self.idle_ms = idle_ms
        self._placeholder_key = placeholder_key
        self.batches = 0

    async def deliver(self, outcomes: list[tuple[Job, Result | ServeError]]) -> None:
        """Publish results and acknowledge their jobs in one owner-checked script. A failed
        attempt below `max_deliveries` is handed back to be retried by any worker."""
        self.batches += 1
        answers, retries = [], []
        for job, outcome in outcomes:
            held = self._held.pop(job.job_id, None)
            if held is None:
                continue  # lease lost meanwhile: its new owner answers it
            if isinstance(outcome, InferenceFailed):
                if held.deliveries < self.max_deliveries:
                    retries.append(held.entry_id)
                    continue
                reason = f"{outcome.message} on each of {held.deliveries} deliveries"
                self.metrics.dead_lettered.labels(self.name).inc()
                header = json.dumps({"job_id": job.job_id, "request_id": job.request_id})
                error = DeadLettered(f"the job was dead-lettered: {reason}")
                reply = encode_reply(job.job_id, error)
                answers.append(Answer(held.entry_id, held.reply_to, reply, header.encode(), reason))
                continue
            answers.append(Answer(held.entry_id, held.reply_to, encode_reply(job.job_id, outcome)))
        try:
            answered = await self.leases.answer(answers)
            retried = await self.leases.hand_back(retries, self.idle_ms)
            self.metrics.handed_back_jobs.labels(self.name).inc(len(retried))
        except RedisError as exc:
            # Unanswered and no longer renewed: reclaimed once Redis is back.
            log.error("could not publish %d results: %r", len(answers), exc)
            return
        if len(answered) < len(answers):
            self.metrics.lost_leases.labels(self.name).inc(len(answers) - len(answered))
            log.warning("%d results not published: their leases were lost",
                        len(answers) - len(answered))  # fmt: skip

    async def dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        """Move an entry to the dead-letter stream and answer its client if it can be read."""
        log.warning("dead-lettering job entry %s: %s", entry_id.decode(), reason)
        self.metrics.dead_lettered.labels(self.name).inc()
        reply_to, reply = self._placeholder_key, b""  # a placeholder key when there is no reply
        with contextlib.suppress(MalformedMessage):
            envelope = decode_job(fields)
            error = DeadLettered(f"the job was dead-lettered: {reason}")
            reply_to, reply = envelope.reply_to, encode_reply(envelope.job.job_id, error)
        header = fields.get(HEADER) or b"-"
        await self.leases.answer([Answer(entry_id, reply_to, reply, header, reason)])
