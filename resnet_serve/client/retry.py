"""When the Python client tries a request again, and how long it waits first."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tenacity import (
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from resnet_serve.client.models import ServeClientError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """503/429 answers are retried with exponential backoff and jitter, never sooner
    than the server's Retry-After; anything else is raised at once."""

    attempts: int = 5  # in all, the first included
    max_wait_s: float = 10.0  # one wait; a longer Retry-After is not waited for
    total_s: float = 60.0  # all attempts and waits together
    backoff_s: float = 0.1  # the first backoff, doubled each retry (plus jitter)

    def tenacity(self) -> dict[str, Any]:
        backoff = wait_exponential_jitter(
            multiplier=self.backoff_s, max=self.max_wait_s, jitter=self.backoff_s
        )

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            server = getattr(error, "retry_after_s", None) or 0.0
            return max(server, backoff(state))

        def retryable(error: BaseException) -> bool:
            return (
                isinstance(error, ServeClientError)
                and error.retryable
                and (error.retry_after_s or 0.0) <= self.max_wait_s
            )

        return {
            "retry": retry_if_exception(retryable),
            "wait": wait,
            "stop": stop_after_attempt(self.attempts) | stop_after_delay(self.total_s),
            "before_sleep": _log_retry,
            "reraise": True,
        }


DEFAULT_RETRY = RetryPolicy()
NO_RETRIES = RetryPolicy(attempts=1)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("retrying in %.2f s (attempt %d): %s", wait, state.attempt_number, error)
