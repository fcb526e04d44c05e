"""Schema migrations: the numbered SQL files of `controlroom/migrations/`, applied in order.

Each pending migration runs in a transaction of its own, under the schema lock every process
takes around its DDL (the event store's table creation too), and is recorded in
`controlroom_migrations` with its file's checksum in that same transaction: processes
starting together apply each one once, and a migration cut short leaves nothing behind.
A migration whose file changed after it was applied is refused by name, never run again.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import psycopg

from controlroom.adapters.postgres.schema_baseline import differences_from

log = logging.getLogger("controlroom.migrations")

SCHEMA_LOCK = "controlroom:schema"
"""The advisory lock (hashtext of it) every process takes around its DDL: one creates at a time."""
CREATE_TABLE = """CREATE TABLE IF NOT EXISTS controlroom_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""
FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
BASELINE_VERSION = 1
"""The migration that creates what schema.sql created before migrations existed."""


@dataclass(frozen=True)
class Migration:
    """One file of the migrations folder."""

    version: int
    name: str
    sql: str = field(repr=False)
    checksum: str
    """sha256 of the file's bytes."""

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


@dataclass(frozen=True)
class Applied:
    """One row of `controlroom_migrations`."""

    version: int
    name: str
    checksum: str
    applied_at: datetime

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


class MigrationError(RuntimeError):
    """The schema can't be brought up to date (the message says which file, and why)."""


Report = Callable[[Migration, str, float], None]
"""Called once a migration is committed: (it, "applied" or "recognised", seconds)."""


def available(folder: Traversable | None = None) -> list[Migration]:
    """The migrations of `folder` (the package's own unless given), by version."""
    folder = folder or resources.files("controlroom.migrations")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = FILE_NAME.match(entry.name)
        if not match:
            raise MigrationError(f"migration file {entry.name}: not named NNNN_name.sql "
                                 "(four digits, then lower-case letters, digits and _)")
        data = entry.read_bytes()
        migration = Migration(int(match[1]), match[2], data.decode(),
                              hashlib.sha256(data).hexdigest())
        if migration.version in found:
            raise MigrationError(f"migrations {found[migration.version].filename} and "
                                 f"{entry.name} have the same number")
        found[migration.version] = migration
    return [found[v] for v in sorted(found)]


def recorded(conn: psycopg.Connection[Any]) -> dict[int, Applied] | None:
    """The migrations the database has, by version; None before the first one (no table)."""
    try:
        rows = conn.execute(
            "SELECT version, name, checksum, applied_at FROM controlroom_migrations").fetchall()
    except psycopg.errors.UndefinedTable:
        return None
    return {r[0]: Applied(*r) for r in rows}


def pending(migrations: list[Migration], applied: dict[int, Applied]) -> list[Migration]:
    """The migrations not applied yet, in order.

    Raises MigrationError for an applied one whose file is not the one applied: running it
    again could do anything, and not running it leaves the database unlike the file says.
    """
    for m in migrations:
        done = applied.get(m.version)
        if done is None:
            continue
        if done.name != m.name:
            raise MigrationError(f"migration {m.filename}: the database applied migration "
                                 f"{m.version} as {done.filename} on {done.applied_at:%Y-%m-%d}; "
                                 "a released migration is never renamed")
        if done.checksum != m.checksum:
            raise MigrationError(
                f"migration {m.filename} was changed after it was applied to this database "
                f"(on {done.applied_at:%Y-%m-%d}; checksum {done.checksum[:12]}… recorded, the "
                f"file's is {m.checksum[:12]}…). An applied migration is never run again: put "
                "the file back as it was released and make the change in a new migration")
    return [m for m in migrations if m.version not in applied]


def unknown(migrations: list[Migration], applied: dict[int, Applied]) -> list[Applied]:
    """Applied migrations this release doesn't have (a newer release applied them)."""
    ours = {m.version for m in migrations}
    return [a for v, a in sorted(applied.items()) if v not in ours]


def upgrade(conn: psycopg.Connection[Any], migrations: list[Migration],
            report: Report | None = None) -> list[Migration]:
    """Apply the pending migrations in order; return those this call applied or recognised.

    `conn` is in autocommit mode. With nothing pending this is one query and takes no lock:
    DDL beside a running service's projection transactions could deadlock with them (an
    operator command started beside `serve`), and every start but the first of a release
    finds nothing to do.
    """
    applied = recorded(conn)
    if applied is not None and not pending(migrations, applied):
        _mention_unknown(migrations, applied)
        return []
    done: list[Migration] = []
    while True:
        started = time.monotonic()
        # A transaction-scoped lock, taken again for each migration, also works through a
        # transaction pooler; whoever gets it next finds what the one before did.
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (SCHEMA_LOCK,))
            conn.execute(CREATE_TABLE)
            applied = recorded(conn) or {}
            todo = pending(migrations, applied)
            if not todo:
                break
            migration = todo[0]
            try:
                how = _apply(conn, migration, first=not applied)
            except psycopg.Error as e:
                raise MigrationError(f"migration {migration.filename} failed, nothing of it is "
                                     f"applied: {type(e).__name__}: {e}") from e
            conn.execute("INSERT INTO controlroom_migrations (version, name, checksum) "
                         "VALUES (%s, %s, %s)", (migration.version, migration.name, migration.checksum))
        done.append(migration)
        if report:
            report(migration, how, time.monotonic() - started)
    _mention_unknown(migrations, applied)
    return done


def _apply(conn: psycopg.Connection[Any], migration: Migration, *, first: bool) -> str:
    """Run the migration, or recognise its work done by schema.sql: "applied" or "recognised"."""
    if migration.version != BASELINE_VERSION or not first:
        conn.execute(migration.sql)  # a file of ours, not input
        return "applied"
    # Before migrations, every start ran schema.sql, which made what 0001 makes: its tables may
    # be here, full of rows. 0001 creates without IF NOT EXISTS, so it fails as a whole if any
    # of its names is taken; then the tables are compared with what it makes, and it is
    # recorded as applied if they are its tables, and refused (nothing done) if they are not.
    try:
        with conn.transaction():  # a savepoint
            conn.execute(migration.sql)
        return "applied"
    except psycopg.errors.DuplicateTable as taken:
        problems = differences_from(conn, migration.sql)
        if problems is None:  # an index's name, say, and none of its tables
            raise MigrationError(f"migration {migration.filename}: {taken}") from taken
    if problems:
        raise MigrationError(
            f"migration {migration.filename}: this database already has tables it creates, "
            f"but not as it creates them ({'; '.join(problems)}). A database made by an "
            "older release: start the release before this one once (it brings the tables "
            "up to date), then this one. Another application's tables of the same names: "
            "give Control Room a database (or a schema, in the search_path) of its own")
    return "recognised"


def _mention_unknown(migrations: list[Migration], applied: dict[int, Applied]) -> None:
    # A rolling deploy: the new release's processes applied them, this one's still start.
    newer = unknown(migrations, applied)
    if newer:
        log.warning("the database has migrations this release doesn't know (%s): a newer "
                    "release applied them; going on", ", ".join(a.filename for a in newer))
