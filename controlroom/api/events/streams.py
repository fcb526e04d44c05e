"""The two live streams: replay from the read model, then live from the feed, gap- and dup-free.

Both subscribe *before* replaying: an event committed after the replay's snapshot is then
certainly delivered live, and one that is in both is dropped by its id (ids only grow).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from uuid import UUID

from litestar.response.sse import ServerSentEventMessage

from controlroom.api.events.ports import EventStreams
from controlroom.api.events.views import HEARTBEAT, batch, end, resume, stopping
from controlroom.projections.events import RunEventRow

log = logging.getLogger("controlroom.events")

REPLAY_PAGE = 500
MAX_VERSION = 2**31 - 1

Messages = AsyncIterator[ServerSentEventMessage]


def _until_end(rows: Sequence[RunEventRow]) -> tuple[Sequence[RunEventRow], RunEventRow | None]:
    """The rows up to the run's terminal event, and that event if it is among them."""
    for i, row in enumerate(rows):
        if row.terminal:
            return rows[: i + 1], row
    return rows, None


async def run_stream(streams: EventStreams, tenant_id: str, run_id: UUID, after: int) -> Messages:
    """A run's events after version `after`, then live ones; `end` after its terminal event."""
    reads = streams.reads
    sub = streams.feed.subscribe_run(tenant_id, run_id)
    try:
        last = start = min(after, MAX_VERSION)
        while True:
            rows, ending = _until_end(
                await reads.run_page(tenant_id, run_id, after=last, limit=REPLAY_PAGE))
            if rows:
                last = rows[-1].version
                yield batch(rows, "run")
            if ending is not None:
                yield end(ending)
                return
            if len(rows) < REPLAY_PAGE:
                break
        if last == start:  # resuming after the end (or nothing yet): has the run ended?
            ending = await reads.ending(tenant_id, run_id)
            if ending is not None and ending.version <= last:
                yield end(ending)
                return
        while True:
            rows = [r for r in await sub.next() if r.version > last]
            if not rows:
                if sub.overflowed or sub.ended:
                    yield resume(last, sub.limit) if sub.overflowed else stopping(last)
                    return
                yield HEARTBEAT
                continue
            if rows[0].version != last + 1:  # not expected by construction; the model has it
                log.warning("run %s: live events skipped %s..%s; filling from the read model",
                            run_id, last + 1, rows[0].version - 1)
                rows = [*await reads.run_page(tenant_id, run_id, after=last,
                                              limit=rows[0].version - last - 1), *rows]
            rows, ending = _until_end(rows)
            last = rows[-1].version
            yield batch(rows, "run")
            if ending is not None:
                yield end(ending)
                return
    finally:
        sub.close()


async def feed_stream(
    streams: EventStreams, tenant_id: str, after: int | None, *, run_id: UUID | None,
    job_type: str | None, events: Sequence[str] | None,
) -> Messages:
    """The tenant's events after log position `after` (else from now on), then live ones."""
    sub = streams.feed.subscribe_tenant(tenant_id, run_id=run_id, job_type=job_type, events=events)
    try:
        # From now on: the feed's cursor is where this subscription's events begin.
        last = streams.feed.cursor if after is None else after
        while after is not None:
            rows = await streams.reads.feed_page(tenant_id, after=last, limit=REPLAY_PAGE,
                                                 run_id=run_id, job_type=job_type, events=events)
            if rows:
                last = rows[-1].position
                yield batch(rows, "feed")
            if len(rows) < REPLAY_PAGE:
                break
        while True:
            rows = [r for r in await sub.next() if r.position > last]
            if rows:
                last = rows[-1].position
                yield batch(rows, "feed")
            elif sub.overflowed or sub.ended:
                yield resume(last, sub.limit) if sub.overflowed else stopping(last)
                return
            else:
                yield HEARTBEAT
    finally:
        sub.close()
