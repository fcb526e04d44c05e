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

    def bind(self, cursor: Cursor[Any] | None) -> None:
        """Write through `cursor` from now on (None: the batch is over)."""
        self._cursor = cursor

    @property
    def cursor(self) -> Cursor[Any]:
        """The open batch's cursor."""
        if self._cursor is None:
            raise NoBatchOpenError(f"projection {self.projection_name}: no batch is open")
        return self._cursor

    def apply(self, tracking: Tracking, statements: Sequence[Statement] = ()) -> None:
        """Run `statements` in the open batch (its position is recorded by the pipeline)."""
        for sql, params in statements:
            self.cursor.execute(sql, _storable(params), prepare=True)

    def transact(self, tracking: Tracking, work: Work) -> None:
        """Do `work` on the open batch's cursor: it reads what the batch wrote so far."""
        work(self.cursor)

    def insert_tracking(self, tracking: Tracking) -> None:
        """An event with nothing to write: the pipeline records the position with the batch."""


def _storable(params: Sequence[Any] | dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
    """PostgreSQL text can't hold NUL: one stray byte must never wedge a projection."""
    if isinstance(params, dict):
        return {k: v.replace("\x00", "\ufffd") if isinstance(v, str) else v
                for k, v in params.items()}
    return [v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in params]
