"""The live tail of run_events for one API process: one LISTEN connection, fanned out in memory.

The `run_events` projection NOTIFYs `controlroom_projected` (`run_events:<position>`) after
each commit; the process's one listener (adapters/postgres/listener.py) passes it on. The feed then
reads the new rows once (`position > cursor`, through the read pool) and hands each to the
subscriptions it concerns, so a thousand watchers cost one query per commit, not one
connection or one poll loop each. A missed notification (the listener reconnecting) is
covered by a slow poll; behind a transaction pooler, where LISTEN can't work, the poll is
the only wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from controlroom.adapters.events.reads import EventReads
from controlroom.adapters.events.subscription import TICKS_PER_HEARTBEAT, Subscription
from controlroom.adapters.postgres.listener import ProjectedListener
from controlroom.projections.events import PROJECTION, RunEventRow

log = logging.getLogger("controlroom.events")

DEFAULT_BUFFER = 1000
"""Events a subscriber may have waiting before it is told to resume (5 s at 200 events/s)."""
DEFAULT_HEARTBEAT_S = 15.0
TAIL_BATCH = 500
POLL_INTERVAL_S = 1.0
"""Safety net for a missed notification while LISTEN works."""
POOLER_POLL_INTERVAL_S = 0.1
"""Behind a transaction pooler there is no LISTEN: one poll per process, never per client."""
MAX_LINGER_S = 0.05
"""Longest pause between two fan-outs: the most an event waits to be batched with others."""

Index = dict[Any, set[Subscription]]


class EventFeed:
    """Fans the read model's new rows out to per-run and per-tenant subscriptions."""

    def __init__(
        self, reads: EventReads, listener: ProjectedListener, *, buffer: int = DEFAULT_BUFFER,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    ) -> None:
        self.reads = reads
        self.buffer = buffer
        self.heartbeat_s = heartbeat_s
        self.poll_interval = POLL_INTERVAL_S if listener.enabled else POOLER_POLL_INTERVAL_S
        self.cursor = 0
        """Position of the last row dispatched: a subscription sees every later one."""
        self._by_run: dict[UUID, set[Subscription]] = {}
        self._by_tenant: dict[str, set[Subscription]] = {}
        self._wake = asyncio.Event()
        self._restart = False
        """Set when a rebuild emptied the read model: the tail starts over from its beginning."""
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        # Woken on (re)connection too: catch up on what committed while nobody listened.
        listener.subscribe(self._announced, on_connect=self._wake.set)

    async def start(self) -> None:
        """Start tailing from the newest row."""
        self.cursor = await self.reads.head()
        self._tasks.append(asyncio.create_task(self._tail(), name="event-feed-tail"))
        self._tasks.append(asyncio.create_task(self._ticks(), name="event-feed-heartbeat"))

    def close(self) -> None:
        """End every subscription (their streams finish; clients resume elsewhere)."""
        self._closed = True
        for subs in (*self._by_run.values(), *self._by_tenant.values()):
            for sub in list(subs):
                sub.end()
        self._wake.set()

    async def stop(self) -> None:
        """Close, and stop the listener and the tail."""
        self.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def subscribe_run(self, tenant_id: str, run_id: UUID) -> Subscription:
        """Every later event of one run."""
        return self._add(self._by_run, run_id,
                         Subscription(tenant_id, run_id=run_id, limit=self.buffer))

    def subscribe_tenant(
        self, tenant_id: str, *, run_id: UUID | None = None, job_type: str | None = None,
        events: Iterable[str] | None = None,
    ) -> Subscription:
        """Every later event of the tenant's runs that passes the filters."""
        sub = Subscription(tenant_id, run_id=run_id, job_type=job_type,
                           events=frozenset(events) if events else None, limit=self.buffer)
        return self._add(self._by_tenant, tenant_id, sub)

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open (for metrics and tests)."""
        return sum(len(s) for s in (*self._by_run.values(), *self._by_tenant.values()))

    def _add(self, index: Index, key: Any, sub: Subscription) -> Subscription:
        sub.on_close = lambda: self._remove(index, key, sub)
        if self._closed:
            sub.end()
        else:
            index.setdefault(key, set()).add(sub)
        return sub

    @staticmethod
    def _remove(index: Index, key: Any, sub: Subscription) -> None:
        subs = index.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del index[key]

    def _dispatch(self, rows: list[RunEventRow]) -> None:
        """Hand each subscription its rows in one push (one wake-up, one write per batch)."""
        by_run: dict[UUID, list[RunEventRow]] = {}
        by_tenant: dict[str, list[RunEventRow]] = {}
        for row in rows:
            if row.run_id in self._by_run:
                by_run.setdefault(row.run_id, []).append(row)
            if row.tenant_id in self._by_tenant:
                by_tenant.setdefault(row.tenant_id, []).append(row)
        for run_id, run_rows in by_run.items():
            for sub in self._by_run.get(run_id, ()):
                sub.push(run_rows if sub.tenant_id == run_rows[0].tenant_id else ())
        for tenant_id, tenant_rows in by_tenant.items():
            for sub in self._by_tenant.get(tenant_id, ()):
                sub.push([r for r in tenant_rows if sub.matches(r)])
        if rows:
            self.cursor = rows[-1].position

    async def _ticks(self) -> None:
        """Heartbeat ticks for every subscription (one timer per process, not one per stream)."""
        while not self._closed:
            await asyncio.sleep(self.heartbeat_s / TICKS_PER_HEARTBEAT)
            for subs in (*self._by_run.values(), *self._by_tenant.values()):
                for sub in subs:
                    sub.tick()

    async def _tail(self) -> None:
        failing = False
        loop = asyncio.get_running_loop()
        while not self._closed:
            self._wake.clear()
            try:
                while True:
                    if self._restart:
                        # Rows come back as the rebuild rewrites them; streams drop those they sent.
                        self._restart, self.cursor = False, 0
                    rows = await self.reads.tail(self.cursor, TAIL_BATCH)
                    started = loop.time()
                    self._dispatch(rows)
                    await asyncio.sleep(0)  # the streams just woken write their messages first
                    # Adaptive batching: rest twice as long as that fan-out took. Fan-out then
                    # takes at most a third of the loop, leaving the GIL to requests and
                    # projections; with many subscribers, events go out in fewer, larger writes
                    # (500 streams at 200 events/s: ~9 per write); with few, the rest is ~0.
                    await asyncio.sleep(min(MAX_LINGER_S, 2 * (loop.time() - started)) if rows else 0)
                    if len(rows) < TAIL_BATCH:
                        break
                if failing:
                    log.info("live events: reading the read model again")
                failing = False
            except Exception as e:  # whatever happens, the tail lives on: streams depend on it
                if not failing:
                    log.warning("live events: cannot read the read model (%s: %s); retrying",
                                type(e).__name__, e)
                failing = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()

    def _announced(self, name: str, position: int) -> None:
        if name != PROJECTION:
            return
        if position == 0:  # a rebuild started (projections/rebuild.py)
            self._restart = True
            self._wake.set()
        elif position > self.cursor:
            self._wake.set()
