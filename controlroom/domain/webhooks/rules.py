"""Webhook rules: event types, which callback an event goes to, the retry schedule, outcomes.

Pure functions of their inputs: the clock and the jitter come from the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

EVENT_TYPES = (
    "run.submitted", "run.started", "run.progress", "run.artifact_added", "run.retrying",
    "run.completed", "run.failed", "run.cancelled", "lineage.edge_recorded",
)
"""What a subscription can ask for; `run.failed` is final, `run.retrying` a failure with a retry to follow."""

CALLBACK_OF = {
    "run.completed": "on_complete",
    "run.failed": "on_fail",
    "run.cancelled": "on_fail",
    "run.started": "on_start",
    "run.progress": "on_progress",
}
"""The submission's `callbacks.<key>` an event is posted to (timeouts are failures with reason `timeout`)."""

DEFAULT_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
"""Standard Webhooks' schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h."""
DEFAULT_JITTER = 0.1
"""Each delay is spread by ±10 %, so receivers recovering from an outage aren't hit in lockstep."""


class Outcome(StrEnum):
    """What one delivery attempt means for the delivery."""

    DELIVERED = "delivered"
    RETRY = "retry"
    GONE = "gone"
    FAILED = "failed"


RETRIED_STATUSES = frozenset({408, 429})


def outcome_of(status_code: int | None) -> Outcome:
    """2xx delivered; 410 gone; no answer (network error, timeout), 408, 429 and 5xx retried; else failed."""
    if status_code is None or status_code in RETRIED_STATUSES or status_code >= 500:
        return Outcome.RETRY
    if 200 <= status_code < 300:
        return Outcome.DELIVERED
    if status_code == 410:
        return Outcome.GONE
    return Outcome.FAILED


@dataclass(frozen=True)
class DeliveryPolicy:
    """When attempts are made: `schedule_s[n]` seconds after attempt n failed (attempt 1 at [0])."""

    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    jitter: float = DEFAULT_JITTER

    @property
    def max_attempts(self) -> int:
        """Attempts made before a delivery is given up."""
        return len(self.schedule_s)

    def delay(self, failed_attempts: int, spread: float) -> float | None:
        """Seconds until the next attempt after `failed_attempts` failures; None once exhausted.

        `spread` in [-1, 1] (random, from the caller) scales the jitter.
        """
        if failed_attempts >= len(self.schedule_s):
            return None
        return max(0.0, self.schedule_s[failed_attempts] * (1 + self.jitter * spread))

    def next_attempt_at(self, failed_attempts: int, now: datetime, spread: float) -> datetime | None:
        """When the next attempt is due, or None once the schedule is exhausted."""
        delay = self.delay(failed_attempts, spread)
        return None if delay is None else now + timedelta(seconds=delay)


def parse_schedule(text: str) -> tuple[float, ...]:
    """A schedule from `0,5,300,…` (seconds); ValueError unless non-empty and non-negative."""
    schedule = tuple(float(part) for part in text.split(",") if part.strip())
    if not schedule or any(s < 0 for s in schedule):
        raise ValueError(f"retry schedule must be non-negative seconds, comma-separated: {text!r}")
    return schedule


def webhook_id(delivery_id: UUID) -> str:
    """The `webhook-id` header: stable for a delivery (an event and a target) across retries."""
    return f"msg_{delivery_id.hex}"
