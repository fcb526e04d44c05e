"""Read-side queries over the run_events read model (asyncpg): replay pages and the tail."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from controlroom.projections.events import RunEventRow

COLUMNS = "position, tenant_id, run_id, version, job_type, event, type, data::text, terminal, at"

RUN_PAGE = f"""
SELECT {COLUMNS} FROM run_events
WHERE run_id = $1 AND tenant_id = $2 AND version > $3::bigint
ORDER BY version LIMIT $4
"""

FEED_PAGE = f"""
SELECT {COLUMNS} FROM run_events
WHERE tenant_id = $1 AND position > $2
  AND ($3::uuid IS NULL OR run_id = $3)
  AND ($4::text IS NULL OR job_type = $4)
  AND ($5::text[] IS NULL OR event = ANY($5))
ORDER BY position LIMIT $6
"""

TAIL = f"SELECT {COLUMNS} FROM run_events WHERE position > $1 ORDER BY position LIMIT $2"

HEAD = "SELECT COALESCE(max(position), 0) FROM run_events"

# A run is there as soon as either model shows it: run_status for read-your-writes after a
# submit, run_events when this read model is ahead of it.
RUN_EXISTS = """
SELECT EXISTS (SELECT 1 FROM run_status WHERE run_id = $1 AND tenant_id = $2)
    OR EXISTS (SELECT 1 FROM run_events WHERE run_id = $1 AND tenant_id = $2 AND version = 1)
"""

ENDING = f"SELECT {COLUMNS} FROM run_events WHERE run_id = $1 AND tenant_id = $2 AND terminal"


def to_row(r: asyncpg.Record) -> RunEventRow:
    """A query row as the read model's record."""
    return RunEventRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])


class EventReads:
    """Tenant-scoped queries of run_events; another tenant's run is simply not there."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def run_exists(self, tenant_id: str, run_id: UUID) -> bool:
        """Whether the run is the tenant's."""
        return bool(await self.pool.fetchval(RUN_EXISTS, run_id, tenant_id))

    async def run_page(
        self, tenant_id: str, run_id: UUID, *, after: int, limit: int
    ) -> list[RunEventRow]:
        """The run's events with a version above `after`, in order."""
        return [to_row(r) for r in await self.pool.fetch(RUN_PAGE, run_id, tenant_id, after, limit)]

    async def ending(self, tenant_id: str, run_id: UUID) -> RunEventRow | None:
        """The event that ended the run, if it has ended."""
        row = await self.pool.fetchrow(ENDING, run_id, tenant_id)
        return None if row is None else to_row(row)

    async def feed_page(
        self, tenant_id: str, *, after: int, limit: int, run_id: UUID | None = None,
        job_type: str | None = None, events: Sequence[str] | None = None,
    ) -> list[RunEventRow]:
        """The tenant's events after log position `after`, optionally narrowed."""
        rows = await self.pool.fetch(
            FEED_PAGE, tenant_id, after, run_id, job_type, list(events) if events else None, limit
        )
        return [to_row(r) for r in rows]

    async def tail(self, after: int, limit: int) -> list[RunEventRow]:
        """Every tenant's events after `after` (the live feed's own reader)."""
        return [to_row(r) for r in await self.pool.fetch(TAIL, after, limit)]

    async def head(self) -> int:
        """The position of the newest event."""
        return int(await self.pool.fetchval(HEAD))
