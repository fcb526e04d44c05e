"""The webhook deliverer: claims due webhook deliveries, sends them, records each attempt.

Isolation: at most `per_endpoint` attempts to one endpoint (scheme, host and port) are in flight
in a worker, `concurrency` in all; deliveries to an endpoint that is full are left in the queue
for other workers or later, so one hanging receiver holds a few threads, never everyone's.

At-least-once: a claim is a lease (the delivery is due again once it lapses), so a worker that
dies mid-send leaves the delivery to be sent again — with the same webhook-id, for receivers to
dedupe. Claims use SKIP LOCKED, so any number of workers may run; it is hosted like the reaper.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import msgspec

from controlroom.domain.webhooks.rules import DeliveryPolicy, Outcome, outcome_of, webhook_id

log = logging.getLogger("controlroom.webhooks")

DEFAULT_CONCURRENCY = 16
DEFAULT_PER_ENDPOINT = 4
"""Attempts in flight to one endpoint, per worker: what one slow receiver can hold."""
ENDPOINT_PATTERN = "^[^:/?#]+://[^/?#]*"
"""A URL's scheme and authority: the same regular expression in Python and in PostgreSQL."""
CLAIM_MARGIN_S = 5.0
"""A claim outlives the request timeout by this much before another worker may take it over."""
IDLE_WAIT_S = 1.0
"""Longest sleep without a wake-up: retries that fall due are found within this."""
FULL_POLL_S = 0.1
"""While an endpoint is full, how often other endpoints' new deliveries are looked for."""


class Attempted(msgspec.Struct, frozen=True):
    """What one attempt got: a status code, or an error without one."""

    status_code: int | None
    latency_ms: float
    error: str | None = None
    refused: bool = False
    started_at: datetime | None = None
    """When the attempt began (before connecting)."""
    finished_at: datetime | None = None
    """When it ended: the answer's status line and headers came, or it failed."""


class DueDelivery(msgspec.Struct, frozen=True):
    """A claimed delivery, with the tenant's valid signing secrets (plaintext, never logged)."""

    delivery_id: UUID
    tenant_id: str
    url: str
    body: bytes
    attempts: int
    schedule_base: int
    subscription_id: UUID | None
    secrets: list[str]


class DeliveryStore(Protocol):
    """Delivery state beside the log (operational: attempts, results, next retry)."""

    def claim_due(self, limit: int, lease_s: float, *, busy: dict[str, int],
                  per_endpoint: int) -> list[DueDelivery]: ...

    def record(self, delivery_id: UUID, attempt: int, url: str, result: Attempted, status: str,
               retry_in_s: float | None) -> None: ...

    def wait_for_work(self, timeout_s: float) -> None: ...


class WebhookSender(Protocol):
    """Sends one signed webhook."""

    timeout_s: float

    def send(self, url: str, webhook_id: str, body: bytes, secrets: list[str]) -> Attempted: ...


class SubscriptionDisabler(Protocol):
    """Records that a subscription's receiver is gone."""

    def disable_subscription(self, tenant_id: str, subscription_id: UUID, reason: str) -> int: ...


def endpoint(url: str) -> str:
    """The endpoint a URL is sent to (scheme and authority), as the claim query computes it."""
    found = re.match(ENDPOINT_PATTERN, url)
    return found.group(0).lower() if found else ""


class WebhookDeliverer:
    """Sends due deliveries, `concurrency` at a time and `per_endpoint` to any one endpoint;
    a runner for LockedLoopHost."""

    def __init__(
        self, store: DeliveryStore, sender: WebhookSender, subscriptions: SubscriptionDisabler,
        policy: DeliveryPolicy, *, concurrency: int = DEFAULT_CONCURRENCY,
        per_endpoint: int = DEFAULT_PER_ENDPOINT, rng: random.Random | None = None,
    ) -> None:
        self.store, self.sender, self.subscriptions, self.policy = store, sender, subscriptions, policy
        self.concurrency = concurrency
        self.per_endpoint = min(per_endpoint, concurrency)
        self.rng = rng or random.Random()
        self.is_interrupted = threading.Event()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="controlroom-webhook")
        self._in_flight: dict[Future[None], str] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> WebhookDeliverer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.is_interrupted.set()
        self._pool.shutdown(wait=False, cancel_futures=True)  # an unrecorded send is resent

    def run_forever(self, timeout: float) -> None:
        """Claim and send until `timeout` passes (a runner's contract), sleeping when idle."""
        lease = self.sender.timeout_s + CLAIM_MARGIN_S
        with self._lock:
            running = list(self._in_flight)
            busy = Counter(self._in_flight.values())
        free = self.concurrency - len(running)
        due = self.store.claim_due(free, lease, busy=dict(busy), per_endpoint=self.per_endpoint
                                   ) if free else []
        for delivery in due:
            self._start(delivery)
        if due:
            return  # maybe more are due (a per-endpoint cap may have left some out): claim again
        # Decided on what the claim saw: an endpoint full then may have deliveries waiting for
        # the slot an attempt frees, though that attempt may have ended since.
        if not free or max(busy.values(), default=0) >= self.per_endpoint:
            wait(running, timeout=min(timeout, IDLE_WAIT_S if not free else FULL_POLL_S),
                 return_when=FIRST_COMPLETED)
            return
        self.store.wait_for_work(min(timeout, IDLE_WAIT_S))

    def _start(self, delivery: DueDelivery) -> None:
        with self._lock:
            future = self._pool.submit(self.deliver, delivery)
            self._in_flight[future] = endpoint(delivery.url)
        future.add_done_callback(self._finished)

    def _finished(self, future: Future[None]) -> None:
        with self._lock:
            self._in_flight.pop(future, None)

    def deliver(self, d: DueDelivery) -> None:
        """One attempt at `d`, and what follows from it."""
        try:
            result = self.sender.send(d.url, webhook_id(d.delivery_id), d.body, d.secrets)
            status, retry_in = self._decide(d, result)
            self.store.record(d.delivery_id, d.attempts + 1, d.url, result, status, retry_in)
            if status == Outcome.GONE and d.subscription_id is not None:
                self.subscriptions.disable_subscription(
                    d.tenant_id, d.subscription_id, f"{d.url} answered 410 Gone")
        except Exception as e:  # the claim lapses and the delivery is sent again
            log.warning("webhook delivery %s not recorded: %s: %s", d.delivery_id,
                        type(e).__name__, e)

    def _decide(self, d: DueDelivery, result: Attempted) -> tuple[str, float | None]:
        if result.refused:
            return Outcome.FAILED, None
        outcome = outcome_of(result.status_code)
        if outcome != Outcome.RETRY:
            return outcome, None
        failed = d.attempts + 1 - d.schedule_base
        delay = self.policy.delay(failed, self.rng.uniform(-1.0, 1.0))
        return ("pending", delay) if delay is not None else (Outcome.FAILED, None)


def delivery_body(payload: dict[str, Any]) -> bytes:
    """The bytes that are signed and sent."""
    return msgspec.json.encode(payload)
