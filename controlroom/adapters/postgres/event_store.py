"""The event store's append path: one statement that never holds the log's lock across a wait.

eventsourcing's Postgres recorder appends in psycopg pipeline mode: `LOCK TABLE … IN EXCLUSIVE
MODE`, `NOTIFY` and the inserts are queued on one connection, then `pipeline.sync()`. When the
queued data is larger than the socket can take at once (a few hundred KiB and up), psycopg
stops sending once its command queue is empty, with the rest of the insert still in libpq's
output buffer, and waits to read results; the server, which already executed the `LOCK`,
waits to read the rest of the insert (`pg_stat_activity`: state `active`, wait_event
`ClientRead`). Neither side ever moves, the lock is never released, every other append queues
behind it, and `idle_in_transaction_session_timeout` never fires (the session is "active").

Here an append is one autocommit statement calling a server-side function: the server has the
whole request (already encoded and size-checked) before the function takes the lock, and it
commits at the end of that statement — the lock is held only while PostgreSQL itself works,
never while it waits on us. `lock_timeout` and `statement_timeout` bound the rest.

Concurrent appends of one process (the API's write threads, a worker's) share statements: see
group_commit.py. A shared append is still one statement of bounded size.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    InterfaceError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from psycopg.sql import SQL, Identifier, Literal

from controlroom.adapters.postgres.group_commit import GroupCommit
from controlroom.adapters.postgres.migrations import SCHEMA_LOCK

APPEND_LOCK_TIMEOUT_S = 3.0
"""How long an append waits for the log's lock before failing (503) instead of queueing on."""
STATEMENT_TIMEOUT_S = 5.0
"""Any one write-side statement; below the API's write deadline, so its thread gets free."""
STATEMENT_TIMEOUT_KEY = "POSTGRES_STATEMENT_TIMEOUT_MS"
"""The env key giving a factory's connections a statement timeout (unset: none)."""
MAX_APPEND_BYTES = 16 * 1024 * 1024
"""Last-resort bound on one append's encoded events (the API and worker append far less)."""
GROUP_MAX_BYTES = 1024 * 1024
"""What a shared append of several callers' events holds at most (a caller's own append may be
larger, up to MAX_APPEND_BYTES, and then goes alone): the lock is held about as long as for a
few of the API's own appends (256 KiB each), never for a pile-up of everyone's."""
GROUP_MAX_EVENTS = 1000
"""Events in one shared append at most (as many as one request may report)."""
SCHEMA_LOCK_WAIT_S = 60.0
"""How long start-up waits for another process's DDL before giving up."""
CONNECTION_RETRIES = 3
RETRY_WAIT_S = 0.2


class AppendTooLargeError(ValueError):
    """One append would write more than MAX_APPEND_BYTES; it was refused before any lock."""


class AppendTimeoutError(OperationalError):
    """The log's lock or the append statement timed out; nothing was written."""


class BoundedAppendRecorder(PostgresApplicationRecorder):
    """Appends with one server-side statement; the lock is never held across a client wait."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.events_table_name)
        function = Identifier(f"{self.events_table_name}_append_v1")
        id_type = SQL(self.datastore.originator_id_type)
        self.sql_create_statements += [
            # Several processes start at once: one at a time replaces the function.
            SQL("SELECT pg_advisory_xact_lock(hashtext({0}))").format(
                Literal(f"controlroom:append:{self.events_table_name}")),
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}("
                "ids {id_type}[], versions bigint[], topics text[], states bytea[], "
                "lock_timeout_ms integer) RETURNS SETOF bigint LANGUAGE plpgsql AS $body$ "
                "BEGIN "
                "PERFORM set_config('lock_timeout', lock_timeout_ms || 'ms', true); "
                "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
                "NOTIFY {channel}; "
                "RETURN QUERY INSERT INTO {schema}.{table} "
                "(originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(ids, versions, topics, states) RETURNING notification_id; "
                "END $body$"
            ).format(schema=schema, function=function, id_type=id_type, table=table,
                     channel=Identifier(self.channel_name)),
        ]
        self._append = SQL(
            "SELECT * FROM {schema}.{function}(%b::{id_type}[], %b::bigint[], %b::text[], "
            "%b::bytea[], %b::integer)"
        ).format(schema=schema, function=function, id_type=id_type)
        self._append_query: bytes | None = None
        self._probe = SQL("LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE").format(
            schema=schema, table=table)
        self._group: GroupCommit[StoredEvent] = GroupCommit(
            self._append_now, size=lambda e: len(e.state), max_bytes=GROUP_MAX_BYTES,
            max_items=GROUP_MAX_EVENTS, is_conflict=lambda e: isinstance(e, IntegrityError))

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Append `stored_events` in one statement (all or nothing) and return their positions.

        The statement may carry other threads' events too (before or after ours, never between):
        the positions returned are ours, and a conflict on one of our versions is ours alone.
        """
        if not stored_events:
            return []
        size = sum(len(e.state) for e in stored_events)
        if size > MAX_APPEND_BYTES:
            raise AppendTooLargeError(f"one append of {size} bytes exceeds {MAX_APPEND_BYTES}")
        return self._group.append(stored_events)

    @property
    def appends_waiting(self) -> int:
        """Callers queued behind the append in flight, to go in the next shared one."""
        return self._group.waiting

    def _append_now(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        """One statement appending `stored_events`, retried on a dropped connection."""
        params = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
            int(APPEND_LOCK_TIMEOUT_S * 1000),
        )
        for attempt in range(1, CONNECTION_RETRIES + 1):
            try:
                return self._insert(params)
            except AppendTimeoutError:
                raise  # the server gave up waiting: retrying would only queue again
            except (InterfaceError, OperationalError):
                # A dropped connection is retried (nothing was committed); a timeout is not.
                if attempt == CONNECTION_RETRIES:
                    raise
                time.sleep(RETRY_WAIT_S)
        raise AssertionError("unreachable")

    def _insert(self, params: tuple[Any, ...]) -> list[int]:
        try:
            with self.datastore.get_connection() as conn:
                # Autocommit: the statement is its own transaction, committed by the server.
                assert conn.autocommit
                if self._append_query is None:
                    # Composed once: psycopg converts a Composed query on every execute, and
                    # caches the conversion of a query given as bytes.
                    self._append_query = self._append.as_bytes(conn)
                rows = conn.execute(self._append_query, params).fetchall()
        except PersistenceError as e:
            if isinstance(e.__cause__, (psycopg.errors.LockNotAvailable,
                                        psycopg.errors.QueryCanceled)):
                raise AppendTimeoutError(str(e)) from e
            raise
        return [next(iter(row.values())) for row in rows]

    def probe(self) -> None:
        """Take and release the log's lock (waiting at most the lock timeout): can we append?"""
        try:
            with self.datastore.get_connection() as conn, conn.transaction(force_rollback=True):
                conn.execute(SQL("SET LOCAL lock_timeout = {0}").format(
                    Literal(f"{int(APPEND_LOCK_TIMEOUT_S * 1000)}ms")))
                conn.execute(self._probe)
        except PersistenceError as e:
            if isinstance(e.__cause__, (psycopg.errors.LockNotAvailable,
                                        psycopg.errors.QueryCanceled)):
                raise AppendTimeoutError(str(e)) from e
            raise


def _bound_sessions(datastore: PostgresDatastore, timeout_ms: int) -> None:
    """Every connection of `datastore` gets a statement timeout as it is configured."""
    pool: Any = datastore.pool
    configure = pool._configure  # the library's: autocommit, idle-in-transaction timeout

    def bounded(conn: psycopg.Connection[Any]) -> None:
        if configure is not None:
            configure(conn)
        conn.execute(SQL("SET statement_timeout = {0}").format(Literal(f"{timeout_ms}ms")))

    pool._configure = bounded


class EventStoreFactory(PostgresFactory):
    """PostgresFactory whose application recorder appends with BoundedAppendRecorder.

    Every recorder's tables are created under the schema lock that also guards the migrations:
    concurrent `CREATE TABLE IF NOT EXISTS` of one table collide in PostgreSQL's catalog
    (`pg_type_typname_nsp_index`), so processes starting together on an empty database would.
    """

    application_recorder_class = BoundedAppendRecorder

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        if timeout_ms := int(self.env.get(STATEMENT_TIMEOUT_KEY) or 0):
            _bound_sessions(self.datastore, timeout_ms)  # the pool opens lazily: all get it

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """The library's, its tables created under the schema lock."""
        with self._schema_lock():
            return super().aggregate_recorder(purpose)

    def application_recorder(self) -> ApplicationRecorder:
        """The library's, its tables created under the schema lock."""
        with self._schema_lock():
            return super().application_recorder()

    def tracking_recorder(self, tracking_recorder_class: Any = None) -> Any:
        """The library's, its tables created under the schema lock."""
        with self._schema_lock():
            return super().tracking_recorder(tracking_recorder_class)

    def process_recorder(self) -> Any:
        """The library's, its tables created under the schema lock."""
        with self._schema_lock():
            return super().process_recorder()

    @contextlib.contextmanager
    def _schema_lock(self) -> Iterator[None]:
        """Hold the schema lock in a transaction of its own while the library creates tables.

        The library creates in several transactions (types, then tables, tracking migrations),
        so the lock is held on a connection of its own while they run on the pool's: one taken
        from the pool could leave a pool of one nothing to create with.
        """
        if not self.env_create_table():
            yield
            return
        pool = self.datastore.pool
        conninfo, kwargs = pool.conninfo, pool.kwargs
        assert isinstance(conninfo, str) and isinstance(kwargs, dict)  # as the library gives them
        with psycopg.connect(conninfo, **kwargs) as conn, conn.transaction():
            conn.execute(SQL("SET LOCAL idle_in_transaction_session_timeout = 0"))
            conn.execute(SQL("SET LOCAL statement_timeout = {0}").format(
                Literal(f"{int(SCHEMA_LOCK_WAIT_S * 1000)}ms")))
            conn.execute(SQL("SELECT pg_advisory_xact_lock(hashtext({0}))").format(
                Literal(SCHEMA_LOCK)))
            yield
