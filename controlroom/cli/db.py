"""`controlroom db`: the schema's migrations — apply the pending ones, or list where each stands."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from controlroom.cli.wiring import database
from controlroom.settings import Settings


def add_command(sub: Any) -> None:
    """Register `db upgrade|status`."""
    db = sub.add_parser("db", help="the database schema's migrations")
    db.add_argument("--database-url", help="external Postgres (env DATABASE_URL)")
    actions = db.add_subparsers(dest="action", required=True)
    actions.add_parser("upgrade", help="apply the pending migrations, printing each")
    actions.add_parser("status", help="each migration: applied (when) or pending")
    db.set_defaults(func=cmd_db)


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the pending migrations, or show them; 1 when a migration can't be applied."""
    from controlroom.adapters.postgres.migrations import MigrationError

    with database(settings) as dsn:
        try:
            return _upgrade(dsn) if args.action == "upgrade" else _status(dsn)
        except MigrationError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1


def _upgrade(dsn: str) -> int:
    from controlroom.adapters.postgres.database import apply_schema
    from controlroom.adapters.postgres.migrations import Migration

    def report(migration: Migration, how: str, seconds: float) -> None:
        why = ": its tables were there, made by schema.sql" if how == "recognised" else ""
        print(f"{how} {migration.filename}{why} ({seconds:.2f} s)", flush=True)

    done = apply_schema(dsn, report)
    if not done:
        print("nothing to apply: the database is up to date")
    return 0


def _status(dsn: str) -> int:
    from controlroom.adapters.postgres import migrations
    from controlroom.adapters.postgres.database import schema_connection

    ours = migrations.available()
    with schema_connection(dsn) as conn:
        applied = migrations.recorded(conn)
        made_by_schema_sql = applied is None and conn.execute(
            "SELECT to_regclass('controlroom_schema') IS NOT NULL").fetchone() == (True,)
    applied = applied or {}
    print(f"{'migration':<40} {'state':<9} applied at")
    for m in ours:
        done = applied.get(m.version)
        if done is None:
            print(f"{m.filename:<40} pending")
            continue
        changed = done.name != m.name or done.checksum != m.checksum
        print(f"{m.filename:<40} {'CHANGED' if changed else 'applied':<9} "
              f"{done.applied_at:%Y-%m-%d %H:%M:%S %Z}")
    for extra in migrations.unknown(ours, applied):
        print(f"{extra.filename:<40} {'applied':<9} {extra.applied_at:%Y-%m-%d %H:%M:%S %Z} "
              "(by a newer release: not in this one)")
    todo = [m for m in ours if m.version not in applied]
    if made_by_schema_sql:
        print("The tables were made by schema.sql (before migrations): `controlroom db upgrade` "
              f"checks them and records {ours[0].filename} as applied.")
    migrations.pending(ours, applied)  # a changed migration: refused, by name (exit 1)
    if todo:
        print(f"{len(todo)} pending: `controlroom db upgrade` applies them (any process starting "
              "does too)")
    else:
        print("up to date")
    return 0
