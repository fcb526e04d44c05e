"""Any number of processes may start at once on an empty database: all of them come up.

Each round gets a fresh, empty database and N processes that create everything a `serve`, a
`worker` and a `projector` create at start-up — the schema's migrations (read models and their
positions), the event store's table and append function — released together by a barrier.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from controlroom.adapters.postgres.database import apply_schema, eventsourcing_env
from controlroom.adapters.postgres.migrations import available
from controlroom.commands.application import ControlRoom
from tests.processes_at_once import at_once

PROCESSES = 6
ROUNDS = 4
LIVENESS_S = 120.0


def start_up(dsn: str) -> None:
    """What a process creates before it serves: the same calls, in the same order."""
    apply_schema(dsn)
    ControlRoom(env=eventsourcing_env(dsn)).close()


def test_processes_starting_together_on_an_empty_database_all_come_up(
    make_database: Callable[[], str],
) -> None:
    for _ in range(ROUNDS):
        dsn = make_database()
        at_once(start_up, dsn, processes=PROCESSES, liveness_s=LIVENESS_S)
        with psycopg.connect(dsn) as conn:
            tables = {r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}
            applied = conn.execute("SELECT version FROM controlroom_migrations").fetchall()
        assert sorted(applied) == [(m.version,) for m in available()]  # each once
        assert {"controlroom_events", "run_status", "webhook_deliveries", "run_status_tracking",
            "webhooks_tracking"} <= tables
