"""Base for read-model views: the writes of one projection, on the cursor of the open batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import Tracking
from psycopg import Cursor

LOG_TABLE = "controlroom_events"
"""The event store's table (the application's name + `_events`)."""
PROJECTED_CHANNEL = "controlroom_projected"
"""NOTIFY channel telling API processes a projection reached a position."""

Statement = tuple[str, Sequence[Any] | dict[str, Any]]
Work = Callable[[Cursor[Any]], None]
"""What one event writes, given the cursor of the transaction its position commits in."""


class NoBatchOpenError(RuntimeError):
    """A view was asked to write outside a batch: nothing would commit it with its position."""


class ReadModelView:
    """What a projection writes, always through the batch the pipeline has open.

    The pipeline (pipeline.py) opens one transaction per batch of events, binds every view it
    hosts to that transaction's cursor, feeds the events, then records each view's position in
    the same transaction. So a view never commits anything on its own: rows and position
    commit together or not at all, and a crash replays the whole batch.
    """

    projection_name = ""
    tables: tuple[str, ...] = ()
    """The read-model tables it alone writes: what a rebuild empties (none: not rebuildable)."""

    def __init__(self) -> None:
        self._cursor: Cursor[Any] | None = None
        self._held_sql: str | None = None
        self._held: list[Sequence[Any] | dict[str, Any]] = []

    def bind(self, cursor: Cursor[Any] | None) -> None:
        """Write through `cursor` from now on (None: the batch is over; unsent rows are dropped
        with it, as its transaction is)."""
        self._cursor = cursor
        self._held_sql, self._held = None, []

    def flush(self) -> None:
        """Send the statements held back (the pipeline calls this before recording the
        position; a view calls it before anything that reads what it wrote)."""
        if self._held_sql is None:
            return
        sql, rows = self._held_sql, self._held
        self._held_sql, self._held = None, []
        if len(rows) == 1:
            self.cursor.execute(sql, rows[0], prepare=True)
        else:
            self.cursor.executemany(sql, rows)

    @property
    def cursor(self) -> Cursor[Any]:
        """The open batch's cursor."""
        if self._cursor is None:
            raise NoBatchOpenError(f"projection {self.projection_name}: no batch is open")
        return self._cursor

    def apply(self, tracking: Tracking, statements: Sequence[Statement] = ()) -> None:
        """Run `statements` in the open batch (its position is recorded by the pipeline).

        A run of the same statement (a burst of log lines, say) goes out as one `executemany`:
        in order, but without paying the per-call cost for every row.
        """
        if self._cursor is None:
            raise NoBatchOpenError(f"projection {self.projection_name}: no batch is open")
        for sql, params in statements:
            if sql != self._held_sql:
                self.flush()
                self._held_sql = sql
            self._held.append(_storable(params))

    def transact(self, tracking: Tracking, work: Work) -> None:
        """Do `work` on the open batch's cursor: it reads what the batch wrote so far."""
        self.flush()
        work(self.cursor)

    def insert_tracking(self, tracking: Tracking) -> None:
        """An event with nothing to write: the pipeline records the position with the batch."""


def _storable(params: Sequence[Any] | dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
    """PostgreSQL text can't hold NUL: one stray byte must never wedge a projection."""
    if isinstance(params, dict):
        return {k: v.replace("\x00", "\ufffd") if isinstance(v, str) else v
                for k, v in params.items()}
    return [v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in params]
