"""A read model never commits a log position past a write it has not committed.

Views batch events into one transaction while more are at hand; a batch is rolled back when its
runner stops, and the runner resumes from the committed position. If anything committed a later
position meanwhile, the batch's writes would be skipped for good — a subscription never listed,
a deleted one still sent to, a rotated secret never used (found under load in the outbox).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from controlroom.adapters.database import eventsourcing_env
from controlroom.commands.application import ControlRoom
from controlroom.domain.api_key import ApiKey
from controlroom.projections.api_keys import ApiKeysProjection, ApiKeysView
from controlroom.projections.connections import ConnectionsProjection, ConnectionsView
from controlroom.projections.lineage import LineageProjection, LineageView
from controlroom.projections.outbox import OutboxProjection, OutboxView
from controlroom.projections.run_events import RunEventsProjection, RunEventsView
from controlroom.projections.run_status import RunStatusProjection, RunStatusView
from controlroom.projections.view import LogAhead, PositionPastBatchError
from tests.integration.read_model_feed import (
    APP,
    NOW,
    Fed,
    a_bit_of_everything,
    feeding,
    rotated,
    submitted,
    subscribed,
)

TENANT = "tenant-batches"


@pytest.fixture
def outbox(make_database: Callable[[], str]) -> Iterator[Fed]:
    with feeding(make_database(), OutboxProjection, OutboxView) as fed:
        yield fed


def deliveries_to(fed: Fed, subscription_id: Any) -> list[tuple[Any, ...]]:
    return fed.rows("SELECT position, event_type FROM webhook_deliveries "
                    "WHERE subscription_id = %s ORDER BY position", subscription_id)


def test_a_subscription_created_in_a_batch_survives_its_runner_stopping(outbox: Fed) -> None:
    sub = subscribed(TENANT, "run.submitted")
    run = submitted(TENANT)
    outbox.feed([*sub.collect_events(), *run.collect_events()], at_hand=True)
    outbox.stop()
    outbox.restart()

    assert outbox.rows("SELECT status FROM webhook_subscriptions WHERE subscription_id = %s",
                       sub.id) == [("active",)]
    assert deliveries_to(outbox, sub.id) == [(2, "run.submitted")]


def test_a_subscription_deleted_in_a_batch_is_sent_nothing_after_its_deletion(outbox: Fed) -> None:
    sub = subscribed(TENANT, "run.submitted")
    outbox.feed(sub.collect_events())
    sub.delete(by="alice", now=sub.created_at)
    outbox.feed([*sub.collect_events(), *submitted(TENANT).collect_events()], at_hand=True)
    outbox.stop()
    outbox.restart()

    assert outbox.rows("SELECT status FROM webhook_subscriptions WHERE subscription_id = %s",
                       sub.id) == [("deleted",)]
    assert deliveries_to(outbox, sub.id) == []


def test_a_secret_rotated_in_a_batch_survives_its_runner_stopping(outbox: Fed) -> None:
    outbox.feed([*rotated(TENANT, "sealed-new").collect_events(),
                 *submitted(TENANT).collect_events()], at_hand=True)
    outbox.stop()
    outbox.restart()

    assert outbox.rows("SELECT sealed_current, last_position FROM webhook_secrets "
                       "WHERE tenant_id = %s", TENANT) == [("sealed-new", 2)]  # created, then rotated


def test_a_run_event_in_a_batch_sees_the_subscriptions_the_batch_made(outbox: Fed) -> None:
    """Fan-out reads the batch's own writes: nothing in flight is invisible to it."""
    sub = subscribed(TENANT, "run.submitted")
    outbox.feed([*sub.collect_events(), *submitted(TENANT).collect_events()], at_hand=True)
    outbox.feed(submitted(TENANT).collect_events())  # live: the batch ends with it

    assert deliveries_to(outbox, sub.id) == [(2, "run.submitted"), (3, "run.submitted")]
    assert outbox.tracked() == 3


VIEWS = {
    "run_status": (RunStatusProjection, RunStatusView),
    "run_events": (RunEventsProjection, RunEventsView),
    "lineage": (LineageProjection, LineageView),
    "connections": (ConnectionsProjection, ConnectionsView),
    "api_keys": (ApiKeysProjection, ApiKeysView),
    "webhooks": (OutboxProjection, OutboxView),
}


@pytest.mark.parametrize("name", VIEWS)
def test_every_view_commits_its_position_only_with_its_writes(
    make_database: Callable[[], str], name: str,
) -> None:
    """Stopped after each event of a batch, then resumed: the same rows as fed one by one."""
    log = a_bit_of_everything(TENANT)
    with feeding(make_database(), *VIEWS[name]) as fed:
        fed.feed(log)
        assert fed.tracked() == len(log)
        expected = fed.contents()
        for stop_after in range(1, len(log) + 1):
            fed.reset()
            fed.feed(log[:stop_after], at_hand=True)
            fed.stop()
            assert fed.tracked() == 0, f"a position committed inside a batch of {stop_after}"
            fed.log = list(log)
            fed.restart()
            assert fed.contents() == expected, f"stopped after {stop_after}"


def test_a_position_recorded_from_outside_joins_the_open_batch(outbox: Fed) -> None:
    """Whatever records a position while a batch is open commits with the batch, not before."""
    outbox.feed(subscribed(TENANT, "run.submitted").collect_events(), at_hand=True)
    outbox.view.insert_tracking(Tracking(APP, 2))
    assert outbox.tracked() == 0
    outbox.stop()
    assert outbox.tracked() == 0
    outbox.restart()
    assert outbox.tracked() == 1


def test_a_position_committed_by_a_transaction_of_its_own_is_refused_during_a_batch(
    outbox: Fed,
) -> None:
    """The mistake that lost subscriptions can't come back: it fails, and the batch replays."""
    outbox.feed(subscribed(TENANT, "run.submitted").collect_events(), at_hand=True)
    with pytest.raises(PositionPastBatchError), \
            outbox.view.datastore.transaction(commit=True) as curs:
        outbox.view._insert_tracking(curs, Tracking(APP, 2))
    outbox.stop()
    assert outbox.tracked() == 0
    outbox.restart()
    assert outbox.rows("SELECT count(*) FROM webhook_subscriptions") == [(1,)]


def test_events_already_in_the_log_share_one_commit_and_the_last_commits_at_once(
    make_database: Callable[[], str],
) -> None:
    """How a hosted view knows more is coming: the log itself, not the library's buffers."""
    dsn = make_database()
    app = ControlRoom(env=eventsourcing_env(dsn))
    try:
        subs = [subscribed(TENANT, "run.submitted") for _ in range(5)]
        for sub in subs:
            app.save(sub)
        app.save(ApiKey.issue(key_id=uuid.uuid4(), tenant_id=TENANT, name="ci", scopes=None,
                              key="cr_" + uuid.uuid4().hex, by="alice", now=NOW))
        log = list(app.recorder.select_notifications(start=1, limit=100))
        events = [app.mapper.to_domain_event(n) for n in log]
    finally:
        app.close()
    assert len(log) == 6
    with feeding(dsn, OutboxProjection, OutboxView) as fed:
        fed.view.more_waiting = LogAhead(OutboxProjection.topics)
        tracked = []
        for event, notification in zip(events[:5], log[:5], strict=True):
            fed.projection.process_event(event, Tracking(APP, notification.id))
            tracked.append(fed.tracked())
        # The api key's event is not the outbox's: the fifth subscription is its last, at once.
        assert tracked == [0, 0, 0, 0, log[4].id]
        assert fed.rows("SELECT count(*) FROM webhook_subscriptions") == [(5,)]
        everything = LogAhead()
        with fed.view.datastore.transaction(commit=False) as curs:
            assert everything(curs, log[4].id) and not everything(curs, log[5].id)

