"""Base for read-model views: row changes, tracking and a wake-up commit together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder

PROJECTED_CHANNEL = "controlroom_projected"
"""NOTIFY channel telling API processes a projection reached a position."""

Statement = tuple[str, Sequence[Any] | dict[str, Any]]


class ReadModelView(PostgresTrackingRecorder):
    """A tracking recorder whose writes are exactly-once and announce themselves."""

    projection_name = ""
    tables: tuple[str, ...] = ()
    """The read-model tables it alone writes: what a rebuild empties (none: not rebuildable)."""

    def apply(self, tracking: Tracking, statements: Sequence[Statement] = ()) -> None:
        """Run `statements`, record `tracking` and notify waiters, in one transaction."""
        with self.datastore.transaction(commit=True) as curs:
            # Read models can be rebuilt from the log, and their tracking commits with them,
            # so a crash can only roll both back together: no need to wait for fsync.
            curs.execute("SET LOCAL synchronous_commit = off", prepare=True)
            for sql, params in statements:
                curs.execute(sql, _storable(params), prepare=True)
            self._insert_tracking(curs, tracking)
            curs.execute(
                "SELECT pg_notify(%s, %s)",
                (PROJECTED_CHANNEL, f"{self.projection_name}:{tracking.notification_id}"),
                prepare=True,
            )


def _storable(params: Sequence[Any] | dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
    """PostgreSQL text can't hold NUL: one stray byte must never wedge a projection."""
    if isinstance(params, dict):
        return {k: v.replace("\x00", "\ufffd") if isinstance(v, str) else v
                for k, v in params.items()}
    return [v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in params]
