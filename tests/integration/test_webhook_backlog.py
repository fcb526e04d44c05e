"""A backlog of deliveries to one endpoint is sent back to back, never idling while some are due.

The per-endpoint cap holds a busy endpoint's backlog in the queue while its attempts are in
flight; when one ends, the next is claimed. The worker may only sleep until a wake-up (NOTIFY,
up to a second) when nothing it could send is due. Real PostgreSQL store, real HTTP receiver.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from controlroom.adapters.postgres.database import apply_schema, operations_pool
from controlroom.adapters.webhooks.delivery import HttpWebhookSender
from controlroom.adapters.webhooks.ssrf import CallbackGuard
from controlroom.adapters.webhooks.store import PostgresDeliveryStore
from controlroom.commands.webhooks.deliveries import WebhookDeliverer
from controlroom.domain.webhooks.rules import DeliveryPolicy
from tests.webhook_receiver import Receiver

BACKLOG = 120
PER_ENDPOINT = 2


class NoSecrets:
    """The tenant has no signing secret: nothing to unseal."""

    def seal(self, secrets: dict[str, str]) -> str:
        raise AssertionError("nothing is sealed here")

    def unseal(self, sealed: str) -> dict[str, str]:
        raise AssertionError("nothing is sealed here")


class WatchedStore(PostgresDeliveryStore):
    """Counts the times the worker went to sleep while a delivery it could claim was due."""

    idle_with_work = 0

    def wait_for_work(self, timeout_s: float) -> None:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending' "
                               "AND next_attempt_at <= now()").fetchone()
        if row and row[0]:
            self.idle_with_work += 1
        super().wait_for_work(timeout_s)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_a_backlog_to_one_endpoint_is_sent_without_waiting_for_wake_ups(
    make_database: Callable[[], str], receiver: Receiver,
) -> None:
    dsn = make_database()
    apply_schema(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(BACKLOG):
            conn.execute(
                "INSERT INTO webhook_deliveries (delivery_id, tenant_id, position, event_type, "
                "target, url, payload, created_at, next_attempt_at) "
                "VALUES (%s, 't', %s, 'run.completed', 'on_complete', %s, '{}', now(), now())",
                (uuid.uuid4(), i, receiver.url("/hook")))
    pool = operations_pool(dsn, 2)
    store = WatchedStore(pool, NoSecrets(), threading.Event())  # nothing NOTIFYs: no wake-ups
    sender = HttpWebhookSender(CallbackGuard("127.0.0.1"), timeout_s=5)
    worker = WebhookDeliverer(store, sender, None,  # type: ignore[arg-type]  # never 410 here
                            DeliveryPolicy(), per_endpoint=PER_ENDPOINT)
    try:
        with worker:
            while len(receiver.received) < BACKLOG:
                worker.run_forever(timeout=1.0)
    finally:
        sender.close()
        pool.close()
    assert store.idle_with_work == 0, (
        f"the worker slept {store.idle_with_work} times with deliveries due")
    assert len({r.webhook_id for r in receiver.received}) == BACKLOG
