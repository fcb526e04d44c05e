"""The pieces of live events that need no server: a subscriber's bounded queue, its heartbeat
ticks, and the client's SSE parser."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

from controlroom.adapters.events.subscription import TICKS_PER_HEARTBEAT, Subscription
from controlroom.client.sse import Message, Parser
from controlroom.projections.events import RunEventRow

RUN = uuid4()


def row(version: int, *, event: str = "progress", tenant: str = "t") -> RunEventRow:
    return RunEventRow(position=100 + version, tenant_id=tenant, run_id=RUN, version=version,
                       job_type="spark_etl", event=event, type=event, data="{}", terminal=False,
                       at=datetime.now(UTC))


def test_a_subscriber_gets_everything_that_waited_in_one_batch() -> None:
    async def scenario() -> list[int]:
        sub = Subscription("t", run_id=RUN, limit=10)
        sub.push([row(1), row(2)])
        sub.push([row(3)])
        return [r.version for r in await sub.next()]

    assert asyncio.run(scenario()) == [1, 2, 3]


def test_a_subscriber_more_than_its_limit_behind_overflows_and_drops_what_waited() -> None:
    async def scenario() -> tuple[bool, list[RunEventRow]]:
        sub = Subscription("t", run_id=RUN, limit=3)
        sub.push([row(1), row(2)])
        sub.push([row(3), row(4)])
        sub.push([row(5)])  # ignored: it is already told to resume
        return sub.overflowed, await sub.next()

    assert asyncio.run(scenario()) == (True, [])


def test_a_quiet_subscriber_is_woken_for_a_heartbeat_after_enough_ticks() -> None:
    async def scenario() -> tuple[bool, list[RunEventRow], bool]:
        sub = Subscription("t", run_id=RUN)
        waiting = asyncio.create_task(sub.next())
        for _ in range(TICKS_PER_HEARTBEAT - 1):
            sub.tick()
        await asyncio.sleep(0)
        early = waiting.done()
        sub.tick()
        return early, await waiting, sub.beat

    assert asyncio.run(scenario()) == (False, [], False)


def test_events_reset_the_heartbeat_count() -> None:
    sub = Subscription("t", run_id=RUN)
    for _ in range(TICKS_PER_HEARTBEAT - 1):
        sub.tick()
    sub.push([row(1)])
    sub.tick()
    assert not sub.beat


def test_tenant_feed_filters_match_tenant_run_job_type_and_event_type() -> None:
    sub = Subscription("t", job_type="spark_etl", events=frozenset({"log"}))
    assert sub.matches(row(1, event="log"))
    assert not sub.matches(row(1, event="progress"))
    assert not sub.matches(row(1, event="log", tenant="other"))


def test_the_client_parser_follows_the_sse_rules() -> None:
    p = Parser()
    lines = [": keepalive", "", "id: 3", "event: log", "data: {\"a\":", "data: 1}", "", "retry: 1000",
             "data: x", "", "event: end", "data:{}", ""]
    got = [m for line in lines if (m := p.feed(line)) is not None]
    assert got == [Message("log", "{\"a\":\n1}", "3"), Message("message", "x", "3", 1000),
                   Message("end", "{}", "3")]
