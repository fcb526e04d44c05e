"""A database as the release before migrations made it: schema.sql applied, its digest recorded.

tests/fixtures/schema_previous_release.sql is that release's schema.sql, byte for byte; it ran
at every start, under the schema lock, unless its sha256 was in `controlroom_schema` already.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg

from controlroom.adapters.postgres.migrations import SCHEMA_LOCK

SCHEMA_SQL = Path(__file__).parent / "fixtures" / "schema_previous_release.sql"


def previous_release(dsn: str, sql: str | None = None) -> None:
    """Make the database as the previous release did at start (`sql`: another schema.sql)."""
    sql = sql if sql is not None else SCHEMA_SQL.read_text()
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (SCHEMA_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS controlroom_schema (digest text PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute(sql)  # type: ignore[arg-type]
        conn.execute("INSERT INTO controlroom_schema (digest) VALUES (%s)",
                     (hashlib.sha256(sql.encode()).hexdigest(),))
