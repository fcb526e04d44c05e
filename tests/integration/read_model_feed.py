"""Feeding read-model views by hand, as their runner would: domain events with log positions.

The views run against a real database of their own (the service's schema, no service), and the
test decides when the next event is "at hand" — the one thing that makes a view batch.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import Environment

from controlroom.adapters.database import apply_schema, eventsourcing_env
from controlroom.commands.application import ControlRoom
from controlroom.domain.api_key import ApiKey
from controlroom.domain.connection import Connection
from controlroom.domain.run import Run
from controlroom.domain.webhook_secret import WebhookSecret
from controlroom.domain.webhook_subscription import Subscription
from controlroom.projections.view import ReadModelView

APP = ControlRoom.name
OUTBOX_TABLES = ("webhook_runs", "webhook_events", "webhook_deliveries", "webhook_subscriptions",
                 "webhook_secrets")
NOW = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass
class Fed:
    """A projection and its view over a database, fed events by position."""

    projection: Projection[Any]
    view: ReadModelView
    dsn: str
    log: list[Any] = field(default_factory=list)
    """Every event fed so far: the log, position n at index n - 1."""

    def feed(self, events: Iterable[Any], *, at_hand: bool = False) -> None:
        """Process `events` at the next positions; `at_hand`: more are always waiting."""
        self.view.more_waiting = lambda curs, position: at_hand
        for event in events:
            self.log.append(event)
            self.projection.process_event(event, Tracking(APP, len(self.log)))

    def stop(self) -> None:
        """What the host does when the runner stops: the open batch is abandoned."""
        self.view.abandon_batch()

    def tracked(self) -> int:
        """The committed position, as a restarted runner would resume from it."""
        return self.view.max_tracking_id(APP) or 0

    def restart(self) -> None:
        """Replay the log from the committed position, live, as a restarted runner does."""
        self.view.more_waiting = lambda curs, position: False
        for position, event in enumerate(self.log[self.tracked():], start=self.tracked() + 1):
            self.projection.process_event(event, Tracking(APP, position))

    def reset(self) -> None:
        """Empty the view's tables and position: a fresh start on the same database."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {', '.join(self.tables())}")  # type: ignore[arg-type]
            conn.execute(f"DELETE FROM {self.projection.name}_tracking "  # type: ignore[arg-type]
                         "WHERE application_name = %s", (APP,))
        self.log = []

    def tables(self) -> tuple[str, ...]:
        """The tables the view writes (the outbox declares none: it can't be rebuilt)."""
        return self.view.tables or OUTBOX_TABLES

    def contents(self) -> dict[str, list[str]]:
        """Every row of the view's tables, without the times the database filled in."""
        found = {}
        for table in self.tables():
            columns = [c for c, kind in self.rows(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position", table)
                if not kind.startswith("timestamp")]
            found[table] = sorted(map(str, self.rows(
                f"SELECT {', '.join(columns)} FROM {table}")))  # type: ignore[misc]
        return found

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """What another connection sees committed."""
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


@contextlib.contextmanager
def feeding(dsn: str, projection: type[Projection[Any]], view: type[ReadModelView]) -> Iterator[Fed]:
    """`projection` writing through a fresh `view` on `dsn` (schema applied), from position 0."""
    apply_schema(dsn)
    env = Environment(projection.name, eventsourcing_env(dsn, for_projection=True))
    recorder = InfrastructureFactory[ReadModelView].construct(env=env).tracking_recorder(view)
    try:
        yield Fed(projection(view=recorder), recorder, dsn)
    finally:
        recorder.abandon_batch()
        recorder.datastore.close()


def subscribed(tenant: str, *wants: str) -> Subscription:
    """A new subscription of `tenant` to `wants` (its creation still to collect)."""
    return Subscription.create(subscription_id=uuid.uuid4(), tenant_id=tenant,
                               url="http://127.0.0.1:9/hook", events=list(wants), by="alice",
                               now=NOW)


def rotated(tenant: str, sealed: str) -> WebhookSecret:
    """The tenant's secret, rotated to `sealed` (its events still to collect)."""
    secret = WebhookSecret.create(tenant)
    secret.rotate(sealed=sealed, grace_s=0, now=NOW)
    return secret


def submitted(tenant: str, **callbacks: str) -> Run:
    """A newly submitted run of `tenant` (its submission still to collect)."""
    return Run.submit(
        run_id=uuid.uuid4(), tenant_id=tenant, job_type="spark_etl", created_by="alice",
        code={}, spec={}, sealed_secrets=None, timeout_s=60, max_retries=0, labels={},
        callbacks=callbacks, idempotency_key=None, request_hash="h", job_name="nightly",
        submitted_at=NOW,
    )


def a_bit_of_everything(tenant: str) -> list[Any]:
    """One of each event the hosted read models fold, in a plausible order."""
    sub = subscribed(tenant, "run.submitted", "run.completed")
    events: list[Any] = [*sub.collect_events(), *rotated(tenant, "sealed-1").collect_events()]
    run = submitted(tenant, on_complete="http://127.0.0.1:9/done")
    run.start(attempt=1, worker_id="w1", now=NOW)
    run.progress(percent=50, message="half way", now=NOW)
    run.log(text="hello\n", stream="stdout", lines=1, now=NOW)
    run.add_artifact(artifact={"artifact_id": str(uuid.uuid4()), "path": "out.csv", "size": 3,
                               "sha256": "0" * 64, "content_type": "text/csv"}, now=NOW)
    run.record_lineage(source="raw.orders", target="mart.orders", now=NOW)
    run.complete(summary="ok", exit_code=0, now=NOW)
    events += run.collect_events()
    conn = Connection.create(tenant, "warehouse")
    conn.set(sealed_dsn="sealed-dsn", display_dsn="postgresql://u:***@db/w", by="alice", now=NOW)
    conn.delete(by="alice", now=NOW)
    key = ApiKey.issue(key_id=uuid.uuid4(), tenant_id=tenant, name="ci", scopes=None,
                       key="cr_" + uuid.uuid4().hex, by="alice", now=NOW)
    key.revoke(by="alice", now=NOW)
    sub.delete(by="alice", now=NOW)
    events += [*conn.collect_events(), *key.collect_events(), *sub.collect_events()]
    return events
