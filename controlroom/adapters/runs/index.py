"""Which runs are still active, for re-queueing after a restart (psycopg, blocking)."""

from __future__ import annotations

import time
from uuid import UUID

import psycopg

ACTIVE_RUNS = "SELECT run_id FROM run_status WHERE status IN ('queued', 'running')"
HEAD = "SELECT max(notification_id) FROM controlroom_events"
APPLIED = "SELECT notification_id FROM run_status_tracking WHERE application_name = 'controlroom'"
POLL_S = 0.1


def active_runs(dsn: str, *, catch_up_timeout_s: float = 30.0) -> list[UUID]:
    """Ids of every queued or running run, once run_status has applied the whole log."""
    deadline = time.monotonic() + catch_up_timeout_s
    with psycopg.connect(dsn, autocommit=True) as conn:
        head = _scalar(conn, HEAD)
        while head and (_scalar(conn, APPLIED) or 0) < head and time.monotonic() < deadline:
            time.sleep(POLL_S)  # a run submitted just before a crash must not be missed
        return [r[0] for r in conn.execute(ACTIVE_RUNS)]


def _scalar(conn: psycopg.Connection, sql: str) -> int | None:
    try:
        row = conn.execute(sql).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return row[0] if row else None
