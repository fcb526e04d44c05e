"""Base for read-model views: row changes, tracking and a wake-up commit together."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg import Cursor

LOG_TABLE = "controlroom_events"
"""The event store's table (the application's name + `_events`)."""
PROJECTED_CHANNEL = "controlroom_projected"
"""NOTIFY channel telling API processes a projection reached a position."""

Statement = tuple[str, Sequence[Any] | dict[str, Any]]
Work = Callable[[Cursor[Any]], None]
"""What one event writes, given the cursor of the transaction its position commits in."""
BATCH_EVENTS = 500
"""Most events that share one transaction: while a view catches up on old news (a rebuild, a
projector back after downtime), or while more events are already waiting in memory."""


class LogAhead:
    """Whether a projection's next events are in the log already, asked of the log itself.

    Every event with one of `topics` past a position will reach the projection, so while one
    exists, committing can wait for it. The furthest one seen is remembered: one query per
    batch, not per event. (Peeking into the subscription's buffer would mean reading private
    attributes of the event store library.)
    """

    def __init__(self, topics: Sequence[str] = ()) -> None:
        self.topics = list(topics)
        self.ahead = 0

    def __call__(self, curs: Cursor[Any], position: int) -> bool:
        """True when an event of ours is in the log past `position`."""
        if position >= self.ahead:
            row = curs.execute(
                f"SELECT max(notification_id) AS head FROM {LOG_TABLE} WHERE notification_id > %s"
                " AND (cardinality(%s::text[]) = 0 OR topic = ANY(%s::text[]))",
                (position, self.topics, self.topics), prepare=True).fetchone()
            self.ahead = _head(row)
        return position < self.ahead


def _head(row: Any) -> int:
    """The `head` column of a row (the event store's cursors make dicts; plain ones tuples)."""
    if row is None:
        return 0
    value = row["head"] if isinstance(row, dict) else row[0]
    return int(value or 0)


class PositionPastBatchError(RuntimeError):
    """A position was about to commit outside the open batch, ahead of the batch's own writes."""

    def __init__(self, projection: str, position: int) -> None:
        super().__init__(f"projection {projection}: position {position} recorded outside its "
                         "open batch; the batch is rolled back and replayed instead")


class ReadModelView(PostgresTrackingRecorder):
    """A tracking recorder whose writes are exactly-once and announce themselves."""

    projection_name = ""
    tables: tuple[str, ...] = ()
    """The read-model tables it alone writes: what a rebuild empties (none: not rebuildable)."""

    catch_up_to = 0
    """Events up to this position are caught up on in batches (set by whoever starts the view)."""
    more_waiting: Callable[[Cursor[Any], int], bool] = staticmethod(lambda curs, position: False)
    """Whether more of its events are in the log past a position: committing now would only cost
    a round trip. Set by whoever starts the view (a `LogAhead`); asked on the batch's cursor."""
    _batch: contextlib.ExitStack | None = None
    _batch_cursor: Any = None
    _batched = 0

    def apply(self, tracking: Tracking, statements: Sequence[Statement] = ()) -> None:
        """Run `statements` and record `tracking`, in one transaction (see `transact`)."""
        self.transact(tracking, lambda curs: self._write(curs, statements))

    def transact(self, tracking: Tracking, work: Work) -> None:
        """Do `work` on the view's cursor, record `tracking` and notify waiters, in one transaction.

        While catching up, or while the next events are already at hand, up to BATCH_EVENTS events
        share that transaction, and only the last one's tracking and notification are written: a
        crash still rolls rows and position back together. A live event with nothing behind it
        commits at once, so a waiting reader never waits for a batch to fill. `work` reads what
        the batch wrote so far (same transaction), and must write only through the cursor it is
        given: a write of its own would commit ahead of the batch it belongs to.
        """
        # A lone live event is a batch of one: it commits with its own tracking at once.
        try:
            curs = self._batch_cursor if self._batch is not None else self._begin_batch()
            work(curs)
            self._batched += 1
            if self._batched >= BATCH_EVENTS or not self._more_to_come(curs, tracking):
                self._done(curs, tracking)
                self._end_batch()
        except BaseException:
            self.abandon_batch()
            raise

    def _more_to_come(self, curs: Cursor[Any], tracking: Tracking) -> bool:
        position = tracking.notification_id
        return position < self.catch_up_to or self.more_waiting(curs, position)

    def insert_tracking(self, tracking: Tracking) -> None:
        """A position with nothing to write: recorded like any event's, so never past a batch."""
        self.apply(tracking)

    def _insert_tracking(self, curs: Cursor[Any], tracking: Tracking) -> None:
        """Refuse a position outside the open batch: rolling the batch back would skip its events."""
        if self._batch is not None and curs is not self._batch_cursor:
            raise PositionPastBatchError(self.projection_name, tracking.notification_id)
        super()._insert_tracking(curs, tracking)

    def abandon_batch(self) -> None:
        """Roll back a batch left open (its runner stopped mid-way): its events come again."""
        if self._batch is not None:
            batch, self._batch = self._batch, None
            with contextlib.suppress(Exception):
                batch.__exit__(RuntimeError, RuntimeError("abandoned"), None)

    def _begin_batch(self) -> Cursor[Any]:
        batch = contextlib.ExitStack()
        self._batch_cursor = batch.enter_context(self.datastore.transaction(commit=True))
        self._batch, self._batched = batch, 0
        self._batch_cursor.execute("SET LOCAL synchronous_commit = off", prepare=True)
        return self._batch_cursor

    def _end_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            batch.close()

    @staticmethod
    def _write(curs: Cursor[Any], statements: Sequence[Statement]) -> None:
        for sql, params in statements:
            curs.execute(sql, _storable(params), prepare=True)

    def _done(self, curs: Cursor[Any], tracking: Tracking) -> None:
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
