"""The read-model schema is applied once per release, on the session's real PostgreSQL.

Every process and every operator command applies schema.sql at start-up; beside a running
service that must not take the service's table locks (a command could deadlock with a
projection's transaction).
"""

from __future__ import annotations

import threading

import psycopg

from controlroom.adapters.database import apply_schema
from controlroom.cli import Services


def test_an_applied_schema_is_not_applied_again_so_start_up_takes_no_table_lock(
    services: Services,
) -> None:
    with psycopg.connect(services.dsn) as busy:
        busy.execute("LOCK TABLE run_status IN ACCESS EXCLUSIVE MODE")  # a long write, say
        done = threading.Event()
        threading.Thread(target=lambda: (apply_schema(services.dsn), done.set()), daemon=True).start()
        assert done.wait(10), "start-up waited on a lock of the running service's tables"


def test_a_schema_not_applied_yet_is_applied(services: Services) -> None:
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM controlroom_schema")  # as before a release with a new schema.sql
        apply_schema(services.dsn)
        assert conn.execute("SELECT count(*) FROM controlroom_schema").fetchone() == (1,)
        assert conn.execute("SELECT to_regclass('projection_rebuilds') IS NOT NULL").fetchone() == (True,)
