"""One live subscriber's bounded queue of run events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from uuid import UUID

from controlroom.projections.events import RunEventRow

TICKS_PER_HEARTBEAT = 3
"""The feed ticks three times per heartbeat interval: a quiet stream beats within 1⅓ of it."""


class Subscription:
    """Events waiting for one stream; a stream that lets too many pile up is overflowed.

    Overflowing drops what was waiting at once (memory stays bounded by `limit` per
    subscriber) and the stream tells its client to resume from the last id it sent.
    Heartbeats come from the feed's ticks, not from a timer per waiting stream: with
    hundreds of streams, arming and cancelling a timer on every wait cost a fifth of the
    event loop's time.
    """

    __slots__ = ("_items", "_quiet_ticks", "_waiter", "beat", "ended", "events", "job_type",
                 "limit", "on_close", "overflowed", "run_id", "tenant_id")

    def __init__(
        self, tenant_id: str, *, run_id: UUID | None = None, job_type: str | None = None,
        events: frozenset[str] | None = None, limit: int = 1000,
    ) -> None:
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.job_type = job_type
        self.events = events
        self.limit = limit
        self.overflowed = False
        self.ended = False
        self.beat = False
        """A heartbeat is due (nothing was sent for a heartbeat interval)."""
        self.on_close: Callable[[], None] | None = None
        self._items: list[RunEventRow] = []
        self._waiter: asyncio.Future[None] | None = None
        self._quiet_ticks = 0

    def matches(self, row: RunEventRow) -> bool:
        """Whether a tenant-feed subscription wants `row`."""
        return (row.tenant_id == self.tenant_id
                and (self.run_id is None or row.run_id == self.run_id)
                and (self.job_type is None or row.job_type == self.job_type)
                and (self.events is None or row.event in self.events))

    def push(self, rows: Sequence[RunEventRow]) -> None:
        """Queue `rows`, or overflow if that puts the subscriber more than `limit` behind."""
        if self.overflowed or self.ended or not rows:
            return
        if len(self._items) + len(rows) > self.limit:
            self.overflowed = True
            self._items = []
        else:
            self._items.extend(rows)
        self._quiet_ticks = 0
        self._wake()

    def tick(self) -> None:
        """One of the feed's heartbeat ticks: after enough quiet ones, a heartbeat is due."""
        self._quiet_ticks += 1
        if self._quiet_ticks >= TICKS_PER_HEARTBEAT:
            self._quiet_ticks = 0
            self.beat = True
            self._wake()

    def end(self) -> None:
        """The server is going away: the stream should finish."""
        self.ended = True
        self._wake()

    async def next(self) -> list[RunEventRow]:
        """Everything waiting, once something is (empty for a heartbeat, overflow or end)."""
        if not (self._items or self.beat or self.overflowed or self.ended):
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self.beat = False
        items, self._items = self._items, []
        return items

    def close(self) -> None:
        """Stop receiving events."""
        self.ended = True
        if self.on_close is not None:
            self.on_close()
            self.on_close = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
