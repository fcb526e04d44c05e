"""The schema's migrations are applied once, on the session's real PostgreSQL.

Every process and every operator command applies the pending migrations at start-up; beside
a running service, with none pending, that must not take the service's table locks (a command
could deadlock with a projection's transaction).
"""

from __future__ import annotations

import threading

import psycopg

from controlroom.adapters.postgres import migrations
from controlroom.adapters.postgres.database import apply_schema
from controlroom.cli import Services


def test_with_nothing_pending_start_up_takes_no_table_lock(services: Services) -> None:
    with psycopg.connect(services.dsn) as busy:
        busy.execute("LOCK TABLE run_status IN ACCESS EXCLUSIVE MODE")  # a long write, say
        done = threading.Event()
        threading.Thread(target=lambda: (apply_schema(services.dsn), done.set()), daemon=True).start()
        assert done.wait(10), "start-up waited on a lock of the running service's tables"


def test_a_database_that_lost_its_record_of_0001_gets_it_back_without_its_tables_made_again(
    services: Services,
) -> None:
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        runs = conn.execute("SELECT count(*) FROM run_status").fetchone()
        conn.execute("DELETE FROM controlroom_migrations")  # as a database made by schema.sql
        applied = apply_schema(services.dsn)
        assert [m.filename for m in applied] == [m.filename for m in migrations.available()]
        assert conn.execute("SELECT version FROM controlroom_migrations ORDER BY version").fetchall() \
            == [(m.version,) for m in migrations.available()]
        assert conn.execute("SELECT count(*) FROM run_status").fetchone() == runs
