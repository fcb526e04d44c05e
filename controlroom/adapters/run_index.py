"""Which runs are still active, for re-queueing after a restart (psycopg, blocking)."""

from __future__ import annotations

from uuid import UUID

import psycopg

ACTIVE_RUNS = "SELECT run_id, status, attempt FROM run_status WHERE status IN ('queued', 'running')"


def active_runs(dsn: str) -> list[tuple[UUID, str, int]]:
    """(run_id, status, attempt) of every queued or running run."""
    with psycopg.connect(dsn) as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute(ACTIVE_RUNS)]
