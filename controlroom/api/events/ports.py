"""What the live event routes need from the composition root, behind small protocols."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from controlroom.projections.events import RunEventRow


class EventReadsPort(Protocol):
    """Tenant-scoped queries of the run_events read model."""

    async def run_exists(self, tenant_id: str, run_id: UUID) -> bool: ...

    async def run_page(
        self, tenant_id: str, run_id: UUID, *, after: int, limit: int
    ) -> Sequence[RunEventRow]: ...

    async def ending(self, tenant_id: str, run_id: UUID) -> RunEventRow | None: ...

    async def feed_page(
        self, tenant_id: str, *, after: int, limit: int, run_id: UUID | None = None,
        job_type: str | None = None, events: Sequence[str] | None = None,
    ) -> Sequence[RunEventRow]: ...


class SubscriptionPort(Protocol):
    """A live subscriber's queue (see adapters/events/subscription.py)."""

    overflowed: bool
    ended: bool
    limit: int

    async def next(self) -> Sequence[RunEventRow]: ...

    def close(self) -> None: ...


class EventFeedPort(Protocol):
    """The process's live tail of run_events."""

    cursor: int

    def subscribe_run(self, tenant_id: str, run_id: UUID) -> SubscriptionPort: ...

    def subscribe_tenant(
        self, tenant_id: str, *, run_id: UUID | None = None, job_type: str | None = None,
        events: Iterable[str] | None = None,
    ) -> SubscriptionPort: ...

    def close(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class EventStreams:
    """Replay from the read model, live from the feed (which also paces the heartbeats)."""

    reads: EventReadsPort
    feed: EventFeedPort

    def close(self) -> None:
        """End every open stream (before the server waits for open responses to finish)."""
        self.feed.close()
