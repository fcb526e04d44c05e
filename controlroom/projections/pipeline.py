"""One reader of the log per process, feeding every read model it hosts.

Each batch of events is read from the log once and handed to every hosted read model; their
rows and their positions commit in one transaction, so no position can be ahead of a write
(a crash replays the batch). A batch is what the log holds past a position, up to
BATCH_EVENTS: one event when live and idle, hundreds while catching up.

Each read model keeps its own position and its own advisory lock, so each is active in exactly
one process, and one can be rebuilt on its own: it starts again from the beginning in its own
pass while the others go on live, and rejoins them once it reaches their position. A read
model whose writes fail is set aside for a while (the others go on) and catches up the same way.

Connections: one for reads and writes, plus the process's session (session.py) for the
advisory locks and the wake-up from the log — both direct, never through a transaction pooler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import psycopg
from eventsourcing.persistence import StoredEvent, Tracking
from psycopg import sql
from psycopg.rows import dict_row

from controlroom.projections.rebuild import Rebuild, tracked_position
from controlroom.projections.session import LockSession
from controlroom.projections.view import LOG_TABLE, PROJECTED_CHANNEL, ReadModelView
from controlroom.services import ThreadService

log = logging.getLogger("controlroom.projections")

APPLICATION = "controlroom"
"""The row of each `<projection>_tracking` table that holds its position."""
BATCH_EVENTS = 500
IDLE_WAIT_S = 0.5
"""Longest sleep without a wake-up from the log (also how soon a stop is noticed when idle)."""
CHECK_S = 1.0
"""How often rebuild requests are looked for."""
LOCK_RETRY_S = 2.0
"""How often a read model another process hosts is tried again (it takes over when that ends)."""
SET_ASIDE_S = 5.0
"""How long a read model whose writes failed waits before it tries again."""
RECONNECT_S = 1.0
CONNECT_TIMEOUT_S = 5

READ = sql.SQL(
    "SELECT notification_id, originator_id, originator_version, topic, state FROM {table} "
    "WHERE notification_id > %(after)s AND (%(upto)s::bigint IS NULL OR notification_id <= %(upto)s) "
    "AND (%(topics)s::text[] IS NULL OR topic = ANY(%(topics)s::text[])) "
    "ORDER BY notification_id LIMIT %(limit)s"
).format(table=sql.Identifier(LOG_TABLE))
TRACK = ("INSERT INTO {table} (application_name, notification_id) VALUES ({app}, {position}) "
         "ON CONFLICT (application_name) DO UPDATE SET notification_id = EXCLUDED.notification_id")


@dataclass(frozen=True)
class ReadModel:
    """A projection a pipeline can host: its name, its events, how to make it, its rebuild."""

    name: str
    make: Callable[[], tuple[Any, ReadModelView]]
    """A fresh projection (`process_event(event, tracking)`) and the view it writes through."""
    topics: tuple[str, ...] = ()
    """The event topics it is fed (all when empty)."""
    rebuild: Rebuild | None = None

    @classmethod
    def of(cls, projection: Any, view: type[ReadModelView], *, rebuildable: bool = False
           ) -> ReadModel:
        """A projection class writing through a view class (rebuildable: the view's tables)."""

        def make() -> tuple[Any, ReadModelView]:
            v = view()
            return projection(v), v

        topics = tuple(projection.topics)
        return cls(projection.name, make, topics,
                   Rebuild(projection.name, view.tables, topics) if rebuildable else None)


@dataclass
class _Member:
    """A read model this process hosts now."""

    model: ReadModel
    projection: Any
    view: ReadModelView
    position: int
    generation: int
    """Of the session its lock was taken in."""
    set_aside_until: float = 0.0

    def wants(self, topic: str) -> bool:
        return not self.model.topics or topic in self.model.topics


@dataclass(frozen=True)
class _Event:
    tracking: Tracking
    topic: str
    event: Any


@dataclass
class _Group:
    """Members at one position: fed from the same reads."""

    position: int
    members: list[_Member] = field(default_factory=list)

    def topics(self) -> list[str] | None:
        """The topics any member wants; None when one wants them all."""
        if any(not m.model.topics for m in self.members):
            return None
        return sorted({t for m in self.members for t in m.model.topics})


class Pipeline(ThreadService):
    """Hosts `models` in one thread: takes their locks, reads the log, feeds and commits them.

    A service named `read_models`: failed while its connection is lost, its detail the read
    models this process hosts now.
    """

    def __init__(self, dsn: str, session: LockSession, models: Sequence[ReadModel],
                 decode: Callable[[StoredEvent], Any], *, channel: str = LOG_TABLE) -> None:
        super().__init__("read_models", thread_name="read-models")
        self.dsn = dsn
        self.session = session
        self.models = {m.name: m for m in models}
        self.decode = decode
        self.channel = channel
        self._wake = threading.Event()
        self.active = threading.Event()
        """Set while this process hosts at least one of its read models."""
        self._members: dict[str, _Member] = {}

    def start(self) -> Self:
        """Begin taking locks and feeding."""
        self._wake = self.session.wake_on(self.channel)
        return super().start()

    def _on_stop_requested(self) -> None:
        self._wake.set()  # it stops after the batch in hand

    def _after_stop(self) -> None:
        self.session.unlock(*self.models)

    def _detail(self) -> str:
        hosted = sorted(self._members)
        return f"active: {', '.join(hosted)}" if hosted else "standing by"

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    def run(self) -> None:
        """Connect, then take locks and feed until stopped, connecting again after errors."""
        while not self.stopping.is_set():
            try:
                with self._connect() as conn:
                    self.recovered()
                    self._serve(conn)
            except Exception as e:
                log.warning("read models interrupted: %s: %s", type(e).__name__, e)
                self.failed(e)
            finally:
                self._members.clear()  # positions are read again with the locks
                self.active.clear()
            self.stopping.wait(RECONNECT_S)

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        next_check = next_lock_try = 0.0
        while not self.stopping.is_set():
            self._step_down_where_lost()
            now = time.monotonic()
            if now >= next_lock_try:
                self._take_locks(conn)
                next_lock_try = now + LOCK_RETRY_S
            if now >= next_check:
                self._carry_out_rebuilds(conn)
                next_check = now + CHECK_S
            self._wake.clear()  # a wake-up from here on is for events the read below may miss
            if not self._step(conn):
                self._wake.wait(max(0.0, min(IDLE_WAIT_S, next_check - time.monotonic())))

    def _step_down_where_lost(self) -> None:
        """Forget read models whose lock went with a lost session: another process may feed them."""
        for name, member in list(self._members.items()):
            if not self.session.holds(name, member.generation):
                del self._members[name]
                log.warning("projection %s: lock lost; standing by", name)
        if not self._members:
            self.active.clear()

    def _take_locks(self, conn: psycopg.Connection[Any]) -> None:
        taken = self.session.try_locks([n for n in self.models if n not in self._members])
        for name, generation in taken.items():
            model = self.models[name]
            projection, view = model.make()
            self._members[name] = _Member(model, projection, view, tracked_position(conn, name),
                                          generation)
            self.active.set()
            log.info("projection %s: active", name)

    def _carry_out_rebuilds(self, conn: psycopg.Connection[Any]) -> None:
        for member in self._members.values():
            rebuild = member.model.rebuild
            if rebuild is None or not rebuild.pending(conn):
                continue
            try:
                target = rebuild.reset(conn)
            except psycopg.OperationalError:
                raise  # the database is away: the request stays pending for the next holder
            except Exception as e:
                rebuild.failed(conn, e)
                raise
            member.position = 0
            log.warning("projection %s: rebuilding from the log, up to position %d",
                        member.model.name, target)

    def _groups(self) -> list[_Group]:
        """Members ready to be fed, by position, furthest ahead first."""
        now = time.monotonic()
        groups: dict[int, _Group] = {}
        for m in self._members.values():
            if m.set_aside_until <= now:
                groups.setdefault(m.position, _Group(m.position)).members.append(m)
        return sorted(groups.values(), key=lambda g: -g.position)

    def _step(self, conn: psycopg.Connection[Any]) -> bool:
        """One batch for each group (the live one first); False when there was nothing to do."""
        fed = False
        groups = self._groups()
        for i, group in enumerate(groups):
            # A group behind another reads only up to it, so that it joins it there.
            upto = groups[i - 1].position if i else None
            rows = conn.execute(READ, {"after": group.position, "upto": upto,
                                       "topics": group.topics(), "limit": BATCH_EVENTS}).fetchall()
            if not rows and upto is None:
                continue
            # Fewer rows than asked for up to `upto`: every event up to it has been seen.
            end = rows[-1][0] if rows and (len(rows) == BATCH_EVENTS or upto is None) else upto
            assert end is not None
            self._feed(conn, group.members, [self._event(r) for r in rows], end)
            fed = True
        return fed

    def _event(self, row: tuple[Any, ...]) -> _Event:
        position, originator_id, version, topic, state = row
        event = self.decode(StoredEvent(originator_id, version, topic, bytes(state)))
        return _Event(Tracking(APPLICATION, position), topic, event)

    def _feed(self, conn: psycopg.Connection[Any], members: list[_Member], events: list[_Event],
              end: int) -> None:
        try:
            self._commit(conn, members, events, end)
            return
        except psycopg.OperationalError:
            raise
        except Exception:
            if len(members) == 1:
                self._set_aside(members[0])
                return
        for member in members:  # find which one failed: the others go on
            try:
                self._commit(conn, [member], events, end)
            except psycopg.OperationalError:
                raise
            except Exception:
                self._set_aside(member)

    def _commit(self, conn: psycopg.Connection[Any], members: list[_Member],
                events: list[_Event], end: int) -> None:
        # Rows as dicts, as views have always read them. In pipeline mode the statements go out
        # without waiting for each answer: a batch costs a round trip or two, not one per row
        # (a view that reads a result waits for what was sent before it, as it must).
        with conn.pipeline(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            for member in members:
                member.view.bind(cur)
                try:
                    for e in events:
                        if member.wants(e.topic):
                            member.projection.process_event(e.event, e.tracking)
                    member.view.flush()
                finally:
                    member.view.bind(None)
            names = tuple(m.model.name for m in members)
            cur.execute(_positions_statement(names, conn), {"end": end})
        for member in members:
            member.position = end

    def _set_aside(self, member: _Member) -> None:
        member.set_aside_until = time.monotonic() + SET_ASIDE_S
        log.exception("projection %s: its writes failed after position %d; the others go on, "
                      "it tries again in %g s", member.model.name, member.position, SET_ASIDE_S)


_statements: dict[tuple[str, ...], bytes] = {}


def _positions_statement(names: tuple[str, ...], conn: psycopg.Connection[Any]) -> bytes:
    """`_positions(names)` as psycopg sends it, converted once per set of members (a Composed
    is converted on every execute; a query given as bytes has its conversion cached)."""
    statement = _statements.get(names)
    if statement is None:
        statement = _statements[names] = _positions(names).as_bytes(conn)
    return statement


def _tracking(name: str) -> sql.Identifier:
    return sql.Identifier(f"{name}_tracking")  # created by migration 0001


def _positions(names: tuple[str, ...]) -> sql.Composed:
    """One statement: every member's position (`%(end)s`), the announcements, and the batch's
    commit mode (a batch of one event would otherwise pay more statements for its bookkeeping
    than for its rows)."""
    end = sql.SQL("%(end)s::bigint")
    recorded = sql.SQL(", ").join(
        sql.SQL("{cte} AS ({track})").format(
            cte=sql.Identifier(f"t{i}"),
            track=sql.SQL(TRACK).format(table=_tracking(n), app=sql.Literal(APPLICATION),
                                        position=end))
        for i, n in enumerate(names))
    announce = sql.SQL(", ").join(
        sql.SQL("pg_notify({}, {} || {})").format(sql.Literal(PROJECTED_CHANNEL),
                                                  sql.Literal(f"{n}:"), end) for n in names)
    # Rows and positions are lost or kept together: a batch lost in a crash is read again, so
    # its commit need not wait for the disk (set_config(..., true) is SET LOCAL).
    return sql.SQL("WITH {recorded} SELECT set_config('synchronous_commit', 'off', true), "
                   "{announce}").format(recorded=recorded, announce=announce)
