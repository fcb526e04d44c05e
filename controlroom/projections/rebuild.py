"""Rebuilding a read model from the log: asked for through a table, done by the projection's host.

Only the process holding a projection's lock (session.py) writes its read model, so that process
does the rebuild: it stops its runner first, then empties the tables and the tracking position
in one transaction, and starts replaying from the beginning of the log. No write of a runner
from before the rebuild can land in the rebuilt model. The request row is also the progress
report: `target_position` is the log's head when the rebuild started, and the projection's
tracking position says how far it has got.

API processes learn of the reset from a `<projection>:0` notification on the projected
channel (positions never go back otherwise) and drop what they hold in memory for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from controlroom.projections.view import LOG_TABLE, PROJECTED_CHANNEL

REQUESTED, REBUILDING, DONE, FAILED = "requested", "rebuilding", "done", "failed"
MIGRATION_ROW = "__migration__"
"""The tracking table's own marker row, written by the event store library: never ours to delete."""


def log_head(conn: psycopg.Connection[Any], topics: tuple[str, ...] = ()) -> int:
    """The newest position in the log (of events with these topics, if given); 0 if none."""
    query = sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(
        sql.Identifier(LOG_TABLE))
    if topics:
        row = conn.execute(query + sql.SQL(" WHERE topic = ANY(%s)"), (list(topics),)).fetchone()
    else:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def tracked_position(conn: psycopg.Connection[Any], projection: str) -> int:
    """Where projection `projection` has got to in the log (0 before it ever ran)."""
    table = f"{projection}_tracking"  # named so by the event store library
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if not (row and row[0]):
        return 0
    row = conn.execute(sql.SQL(
        "SELECT coalesce(max(notification_id), 0) FROM {} WHERE application_name <> %s"
    ).format(sql.Identifier(table)), (MIGRATION_ROW,)).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Progress:
    """How a rebuild stands."""

    projection: str
    state: str
    requested_by: str
    position: int
    target: int | None
    seconds: float | None
    """Since it started (until it finished, once it has)."""
    error: str | None


@dataclass(frozen=True)
class Rebuild:
    """What a rebuild of one projection touches, and the statements that drive it."""

    projection: str
    tables: tuple[str, ...]
    topics: tuple[str, ...] = ()
    """The events it subscribes to (all when empty): its position only moves on those."""

    @property
    def tracking_table(self) -> str:
        """Where the projection's position is kept (named by the event store library)."""
        return f"{self.projection}_tracking"

    def position(self, conn: psycopg.Connection[Any]) -> int:
        """The projection's tracking position (0 before its first event, or before it ever ran)."""
        return tracked_position(conn, self.projection)

    def pending(self, conn: psycopg.Connection[Any]) -> bool:
        """True when a rebuild was asked for and has not started; finishes a caught-up one."""
        row = conn.execute("SELECT state, target_position FROM projection_rebuilds "
                           "WHERE projection = %s", (self.projection,)).fetchone()
        if row is None:
            return False
        state, target = row
        if state == REBUILDING and self.position(conn) >= target:
            conn.execute("UPDATE projection_rebuilds SET state = %s, finished_at = clock_timestamp() "
                         "WHERE projection = %s AND state = %s", (DONE, self.projection, REBUILDING))
        return bool(state == REQUESTED)

    def reset(self, conn: psycopg.Connection[Any]) -> int:
        """Empty the read model and its position, in one transaction; the log position to reach."""
        with conn.transaction():
            conn.execute(sql.SQL("TRUNCATE {}").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in self.tables)))
            if self.position(conn):
                conn.execute(sql.SQL("DELETE FROM {} WHERE application_name <> %s").format(
                    sql.Identifier(self.tracking_table)), (MIGRATION_ROW,))
            target = log_head(conn, self.topics)
            conn.execute(
                "UPDATE projection_rebuilds SET state = %s, started_at = clock_timestamp(), "
                "target_position = %s, finished_at = NULL, error = NULL WHERE projection = %s",
                (REBUILDING, target, self.projection),
            )
            conn.execute("SELECT pg_notify(%s, %s)", (PROJECTED_CHANNEL, f"{self.projection}:0"))
        return target

    def failed(self, conn: psycopg.Connection[Any], error: BaseException) -> None:
        """Record why a rebuild could not start."""
        conn.execute("UPDATE projection_rebuilds SET state = %s, finished_at = clock_timestamp(), "
                     "error = %s WHERE projection = %s",
                     (FAILED, f"{type(error).__name__}: {error}", self.projection))

    def request(self, conn: psycopg.Connection[Any], by: str) -> None:
        """Ask the projection's host to rebuild (a rebuild already under way is left to finish)."""
        conn.execute(
            "INSERT INTO projection_rebuilds (projection, state, requested_by) VALUES (%s, %s, %s) "
            "ON CONFLICT (projection) DO UPDATE SET state = excluded.state, "
            "requested_by = excluded.requested_by, requested_at = clock_timestamp(), "
            "started_at = NULL, target_position = NULL, finished_at = NULL, error = NULL "
            "WHERE projection_rebuilds.state <> %s",
            (self.projection, REQUESTED, by, REBUILDING),
        )

    def progress(self, conn: psycopg.Connection[Any]) -> Progress | None:
        """The latest request's state, None if a rebuild was never asked for."""
        row = conn.execute(
            "SELECT state, requested_by, target_position, extract(epoch FROM "
            "coalesce(finished_at, clock_timestamp()) - started_at)::float8, error "
            "FROM projection_rebuilds WHERE projection = %s", (self.projection,),
        ).fetchone()
        if row is None:
            return None
        state, by, target, seconds, error = row
        return Progress(self.projection, state, by, self.position(conn), target, seconds, error)
