"""One reader of the log feeds every read model; no position ever commits past its writes.

Events are appended to a real event store with the domain's own classes; a real pipeline
(the one `serve` and `projector` run) reads them and feeds the read models. Each read model's
rows are compared with what a clean run over the same log wrote.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from controlroom.adapters.postgres.database import apply_schema, eventsourcing_env
from controlroom.commands.application import ControlRoom
from controlroom.projections import pipeline as pipeline_module
from controlroom.projections.api_keys import ApiKeysProjection, ApiKeysView
from controlroom.projections.connections import ConnectionsProjection, ConnectionsView
from controlroom.projections.events import RunEventsProjection, RunEventsView
from controlroom.projections.lineage import LineageProjection, LineageView
from controlroom.projections.pipeline import Pipeline, ReadModel
from controlroom.projections.rebuild import DONE, log_head, tracked_position
from controlroom.projections.runs import RunStatusProjection, RunStatusView
from controlroom.projections.session import LockSession
from controlroom.projections.webhooks.outbox import OutboxProjection, OutboxView
from tests.integration.domain_events import NOW, a_bit_of_everything, submitted, subscribed

TENANT = "tenant-pipeline"
SETTLE_S = 30.0
OUTBOX_TABLES = ("webhook_runs", "webhook_events", "webhook_deliveries", "webhook_subscriptions",
                 "webhook_secrets")
MODELS = {
    "run_status": ReadModel.of(RunStatusProjection, RunStatusView, rebuildable=True),
    "run_events": ReadModel.of(RunEventsProjection, RunEventsView, rebuildable=True),
    "lineage": ReadModel.of(LineageProjection, LineageView, rebuildable=True),
    "connections": ReadModel.of(ConnectionsProjection, ConnectionsView, rebuildable=True),
    "api_keys": ReadModel.of(ApiKeysProjection, ApiKeysView, rebuildable=True),
    "webhooks": ReadModel.of(OutboxProjection.linking_to("http://cr.test"), OutboxView),
}


class Log:
    """The event store of a fresh database, and how to read what the read models made of it."""

    def __init__(self, dsn: str) -> None:
        apply_schema(dsn)
        self.dsn = dsn
        self.app = ControlRoom(env=eventsourcing_env(dsn))
        self.decoded = 0
        self.session = LockSession(dsn).start()

    def append(self, events: list[Any]) -> int:
        """Append `events`; the log's head after them."""
        self.app.save(*events)
        return self.head()

    def head(self) -> int:
        with psycopg.connect(self.dsn) as conn:
            return log_head(conn)

    def decode(self, stored: StoredEvent) -> Any:
        """The write side's decoding, counted."""
        self.decoded += 1
        return self.app.mapper.to_domain_event(stored)

    def pipeline(self, models: list[ReadModel]) -> Pipeline:
        return Pipeline(self.dsn, self.session, models, self.decode,
                        channel=self.app.recorder.channel_name)

    def position(self, name: str) -> int:
        with psycopg.connect(self.dsn) as conn:
            return tracked_position(conn, name)

    def settle(self, names: list[str], position: int) -> None:
        """Wait until every one of `names` has applied `position` (or, for one fed some topics
        only, its last event up to there: alone, it moves only on those)."""
        deadline = time.monotonic() + SETTLE_S
        targets = {n: self.last_of(MODELS[n].topics, position) for n in names}
        while any(self.position(n) < at for n, at in targets.items()):
            assert time.monotonic() < deadline, {n: self.position(n) for n in names}
            time.sleep(0.05)

    def last_of(self, topics: tuple[str, ...], upto: int) -> int:
        if not topics:
            return upto
        [(at,)] = self.rows("SELECT coalesce(max(notification_id), 0) FROM controlroom_events "
                            "WHERE notification_id <= %s AND topic = ANY(%s)", upto, list(topics))
        return int(at)

    def contents(self, name: str) -> dict[str, list[str]]:
        """Every row of a read model's tables, without the times the database filled in."""
        found = {}
        tables = MODELS[name].rebuild.tables if MODELS[name].rebuild else OUTBOX_TABLES
        with psycopg.connect(self.dsn) as conn:
            for table in tables:
                columns = [c for c, kind in conn.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
                    if not kind.startswith("timestamp")]
                found[table] = sorted(map(str, conn.execute(
                    f"SELECT {', '.join(columns)} FROM {table}").fetchall()))  # type: ignore[arg-type]
        return found

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def log(make_database: Callable[[], str]) -> Iterator[Log]:
    opened = Log(make_database())
    yield opened
    opened.session.stop()
    opened.app.close()


@contextlib.contextmanager
def running(pipeline: Pipeline) -> Iterator[Pipeline]:
    pipeline.start()
    try:
        yield pipeline
    finally:
        pipeline.stop()


class Failing:
    """A read model whose projection fails on one event position until it is allowed."""

    def __init__(self, model: ReadModel, at: int) -> None:
        self.model, self.at, self.allowed, self.failures = model, at, False, 0

    def read_model(self) -> ReadModel:
        def make() -> tuple[Any, Any]:
            projection, view = self.model.make()
            process = projection.process_event

            def process_event(event: Any, tracking: Any) -> None:
                process(event, tracking)  # written into the batch first, then the failure
                if tracking.notification_id == self.at and not self.allowed:
                    self.failures += 1
                    raise RuntimeError("the read model's database refused a write")

            projection.process_event = process_event
            return projection, view

        return ReadModel(self.model.name, make, self.model.topics, self.model.rebuild)


def clean_contents(make_database: Callable[[], str], name: str, events: list[Any]) -> Any:
    """What `name` holds after a run with no failure over the same events."""
    clean = Log(make_database())
    try:
        head = clean.append(events)
        with running(clean.pipeline([MODELS[name]])):
            clean.settle([name], head)
        return clean.contents(name)
    finally:
        clean.session.stop()
        clean.app.close()


def test_each_event_is_read_once_for_every_read_model(log: Log) -> None:
    events = a_bit_of_everything(TENANT)
    head = log.append(events)
    with running(log.pipeline(list(MODELS.values()))):
        log.settle(list(MODELS), head)
    assert log.decoded == len(events), "an event was read more than once"
    assert {n: log.position(n) for n in MODELS} == dict.fromkeys(MODELS, head)


@pytest.mark.parametrize("name", MODELS)
def test_a_read_model_failing_mid_batch_commits_neither_rows_nor_position_and_catches_up(
    log: Log, make_database: Callable[[], str], name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The failure comes after the event's rows are written in the batch: they go with it."""
    monkeypatch.setattr(pipeline_module, "SET_ASIDE_S", 0.2)
    events = a_bit_of_everything(TENANT)
    expected = clean_contents(make_database, name, events)
    head = log.append(events)
    failing = Failing(MODELS[name], at=log.last_of(MODELS[name].topics, head))  # its last
    other = "connections" if name != "connections" else "api_keys"
    with running(log.pipeline([failing.read_model(), MODELS[other]])):
        log.settle([other], head)  # the others go on
        deadline = time.monotonic() + SETTLE_S
        while failing.failures < 2:
            assert time.monotonic() < deadline, "the failing read model was never tried again"
            time.sleep(0.05)
        assert log.position(name) == 0, "a position committed past a write that did not"
        assert all(not rows for rows in log.contents(name).values()), "rows of a failed batch"
        failing.allowed = True
        log.settle([name], head)
    assert log.contents(name) == expected


def test_a_subscription_made_in_a_batch_is_kept_and_sent_the_batchs_later_events(
    log: Log,
) -> None:
    """Created, then a run submitted, in one batch: the subscription is listed and gets it."""
    sub = subscribed(TENANT, "run.submitted")
    run = submitted(TENANT)
    head = log.append([*sub.collect_events(), *run.collect_events()])
    with running(log.pipeline([MODELS["webhooks"]])):
        log.settle(["webhooks"], head)
    assert log.rows("SELECT subscription_id FROM webhook_subscriptions") == [(sub.id,)]
    assert log.rows("SELECT run_id FROM webhook_deliveries WHERE subscription_id = %s",
                    sub.id) == [(run.id,)]
    with running(log.pipeline([MODELS["webhooks"]])):  # started again: nothing made twice
        time.sleep(0.5)
    assert len(log.rows("SELECT 1 FROM webhook_deliveries")) == 1


def test_a_read_model_rebuilt_on_its_own_catches_up_and_rejoins_the_others(log: Log) -> None:
    models = [MODELS["run_status"], MODELS["run_events"]]
    head = log.append(a_bit_of_everything(TENANT))
    with running(log.pipeline(models)):
        log.settle(["run_status", "run_events"], head)
        before = log.contents("run_status")
        rebuild = MODELS["run_status"].rebuild
        assert rebuild is not None
        with psycopg.connect(log.dsn, autocommit=True) as conn:
            rebuild.request(conn, "test")
        later = submitted(TENANT)
        head = log.append(later.collect_events())
        log.settle(["run_events"], head)
        deadline = time.monotonic() + SETTLE_S
        with psycopg.connect(log.dsn, autocommit=True) as conn:
            while (progress := rebuild.progress(conn)) is None or progress.state != DONE:
                assert time.monotonic() < deadline, progress
                time.sleep(0.05)
        log.settle(["run_status"], head)
    after = log.contents("run_status")
    assert set(before["run_status"]) < set(after["run_status"])
    assert len(after["run_status"]) == len(before["run_status"]) + 1
    assert log.position("run_status") == log.position("run_events") == head
    assert str(uuid.UUID(str(later.id))) in str(after["run_status"])


def test_bursts_of_log_lines_written_at_once_leave_what_one_by_one_leaves(
    log: Log, make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs of log lines go out as one statement over all their rows (`bulk`): every row, and
    each run's counters, last position and time, are what feeding them one at a time gives."""
    runs = [submitted(TENANT), submitted(TENANT)]
    events: list[Any] = [e for run in runs for e in run.collect_events()]
    for i in range(120):  # the two runs' lines interleaved, with progress between the bursts
        run = runs[i % 2] if i % 7 else runs[0]
        if i % 30 == 29:
            run.progress(percent=i / 1.2, message=f"at {i}", now=NOW + timedelta(seconds=i))
        run.log(text=f"line {i}\n" * (1 + i % 3), stream="stderr" if i % 5 else "stdout",
                lines=1 + i % 3, now=NOW + timedelta(seconds=i))
        events += run.collect_events()
    names = ["run_status", "run_events"]
    head = log.append(events)
    with running(log.pipeline([MODELS[n] for n in names])):  # all 240+ events in one batch
        log.settle(names, head)

    one_by_one = Log(make_database())
    monkeypatch.setattr(pipeline_module, "BATCH_EVENTS", 1)
    try:
        assert one_by_one.append(events) == head
        with running(one_by_one.pipeline([MODELS[n] for n in names])):
            one_by_one.settle(names, head)
        for name in names:
            assert log.contents(name) == one_by_one.contents(name)
        shown = ("SELECT run_id, log_lines, event_count, last_position, updated_at "
                 "FROM run_status ORDER BY run_id")
        assert log.rows(shown) == one_by_one.rows(shown)
        assert log.rows("SELECT count(*) FROM run_log_chunks") == [(120,)]
    finally:
        one_by_one.session.stop()
        one_by_one.app.close()


def test_the_outbox_fed_a_whole_batch_queues_what_it_queues_fed_one_event_at_a_time(
    log: Log, make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Within a batch the outbox keeps each run's facts in hand (reading them once per run):
    the messages, their payloads (attempt, started_at, artifacts so far) and the deliveries are
    those of one event per batch, read from the table every time."""
    sub = subscribed(TENANT, "run.started", "run.artifact_added", "run.completed", "run.retrying")
    events: list[Any] = list(sub.collect_events())
    for n in range(3):
        run = submitted(TENANT, on_complete=f"http://127.0.0.1:9/done/{n}")
        run.start(attempt=1, worker_id="w1", now=NOW + timedelta(seconds=n))
        for i in range(n + 1):
            run.add_artifact(artifact={"artifact_id": str(uuid.uuid4()), "path": f"out{i}.csv",
                                       "size": 3, "sha256": "0" * 64, "content_type": "text/csv"},
                             now=NOW)
            run.progress(percent=10.0 * i, message=f"step {i}", now=NOW)
        run.complete(summary=f"run {n} done", exit_code=0, now=NOW + timedelta(minutes=n))
        events += run.collect_events()
    head = log.append(events)
    with running(log.pipeline([MODELS["webhooks"]])):
        log.settle(["webhooks"], head)

    one_by_one = Log(make_database())
    monkeypatch.setattr(pipeline_module, "BATCH_EVENTS", 1)
    try:
        assert one_by_one.append(events) == head
        with running(one_by_one.pipeline([MODELS["webhooks"]])):
            one_by_one.settle(["webhooks"], head)
        assert log.contents("webhooks") == one_by_one.contents("webhooks")
    finally:
        one_by_one.session.stop()
        one_by_one.app.close()
    completed = log.rows("SELECT payload FROM webhook_events WHERE event_type = 'run.completed' "
                         "ORDER BY position")
    assert [len(p["data"]["artifacts"]) for (p,) in completed] == [1, 2, 3]
    assert all(p["data"]["started_at"] for (p,) in completed)
