"""The process's one session connection: advisory locks and LISTEN wake-ups for everyone.

What needs a session (advisory locks that last, LISTEN) shares one connection per process: the
read-model pipeline's locks and its wake-up from the log, the reaper's and the webhook
deliverer's locks, the webhook deliverer's wake-up. It must be a direct connection, never one
through a transaction pooler.

If the connection is lost, every lock it held is gone with it: the generation moves on, so each
holder sees it no longer holds its lock and steps down, and every wake-up fires so that nobody
sleeps through the reconnection.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from typing import Any

import psycopg
from psycopg import sql

from controlroom.services import ThreadService

log = logging.getLogger("controlroom.projections")

LISTEN_SLICE_S = 0.05
"""How long the session waits for notifications at a time: others' statements (taking or
releasing a lock) wait at most this for the connection."""
ALIVE_CHECK_S = 1.0
RECONNECT_S = 1.0
CONNECT_TIMEOUT_S = 5
LOCK_NAMESPACE = 0x0C0E  # keeps our advisory lock keys apart from other applications'


def lock_key(name: str) -> int:
    """The advisory lock id of a projection."""
    return (LOCK_NAMESPACE << 32) | zlib.crc32(name.encode())


class LockSession(ThreadService):
    """One connection holding advisory locks and listening on channels, reconnecting by itself.

    A service named `session`: failed while its connection is lost, until it reconnects."""

    stop_timeout_s = 5.0

    def __init__(self, dsn: str) -> None:
        super().__init__("session")
        self.dsn = dsn
        self.generation = 0
        """Moves on whenever the connection is replaced: locks of an older one are gone."""
        self._conn: psycopg.Connection[Any] | None = None
        self._held: set[str] = set()
        self._wakes: dict[str, list[threading.Event]] = {}
        self._mutex = threading.RLock()

    def _after_stop(self) -> None:
        # Closing the connection releases every lock it holds.
        with self._mutex:
            self._drop()

    def wake_on(self, channel: str) -> threading.Event:
        """An event set on every notification on `channel` (and on each reconnection)."""
        event = threading.Event()
        with self._mutex:
            first = channel not in self._wakes
            self._wakes.setdefault(channel, []).append(event)
            if first and self._conn is not None:
                self._listen(self._conn, channel)
        event.set()  # whatever happened before it listened: look once
        return event

    def try_lock(self, name: str) -> int | None:
        """Take the advisory lock `name`: the generation it is held in, None if another has it."""
        return self.try_locks([name]).get(name)

    def try_locks(self, names: list[str]) -> dict[str, int]:
        """Take what it can of the advisory locks `names`, in one round trip: the generation
        each one taken (or already held) is held in."""
        with self._mutex:
            conn = self._conn
            if conn is None:
                return {}
            wanted = [n for n in names if n not in self._held]
            if wanted:
                rows = conn.execute(
                    "SELECT n, pg_try_advisory_lock(k) FROM unnest(%s::text[], %s::bigint[]) "
                    "AS t(n, k)", (wanted, [lock_key(n) for n in wanted])).fetchall()
                self._held.update(n for n, taken in rows if taken)
            return {n: self.generation for n in names if n in self._held}

    def holds(self, name: str, generation: int) -> bool:
        """Whether lock `name`, taken in `generation`, is still held."""
        return generation == self.generation and name in self._held and self._conn is not None

    def unlock(self, *names: str) -> None:
        """Release the locks `names` (another process may take them at once), in one round trip."""
        with self._mutex:
            held = [n for n in names if n in self._held]
            self._held.difference_update(held)
            if held and self._conn is not None:
                with contextlib.suppress(psycopg.Error):  # gone with its connection, if so
                    self._conn.execute("SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) "
                                       "AS t(k)", ([lock_key(n) for n in held],))

    def run(self) -> None:
        """Connect and listen until stopped, reconnecting whenever the connection is lost."""
        next_check = 0.0
        while not self.stopping.is_set():
            try:
                conn = self._conn or self._connect()
                for n in conn.notifies(timeout=LISTEN_SLICE_S):
                    self._wake(n.channel)
                if time.monotonic() >= next_check:
                    with self._mutex:
                        conn.execute("SELECT 1")
                    next_check = time.monotonic() + ALIVE_CHECK_S
            except Exception as e:
                if self.stopping.is_set():
                    return
                log.warning("session connection lost (%s: %s); reconnecting", type(e).__name__, e)
                self.failed(e)
                with self._mutex:
                    self._drop()
                self.stopping.wait(RECONNECT_S)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        with self._mutex:
            for channel in self._wakes:
                self._listen(conn, channel)
            self._conn = conn
        self.recovered()
        for channel in list(self._wakes):
            self._wake(channel)  # what was announced while nobody listened: look again
        return conn

    @staticmethod
    def _listen(conn: psycopg.Connection[Any], channel: str) -> None:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def _wake(self, channel: str) -> None:
        for event in self._wakes.get(channel, ()):
            event.set()

    def _drop(self) -> None:
        """Forget the connection and every lock it held; holders see the new generation."""
        conn, self._conn = self._conn, None
        self._held.clear()
        self.generation += 1
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
        for events in self._wakes.values():
            for event in events:
                event.set()


def holder(conn: psycopg.Connection[Any], name: str) -> str | None:
    """Who hosts projection `name` now ("pid 123 from 10.0.0.5"), None if nobody does."""
    key = lock_key(name)
    row = conn.execute(
        "SELECT a.pid, coalesce(host(a.client_addr), 'local socket') FROM pg_locks l "
        "JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid AND l.objsubid = 1",
        (key >> 32, key & 0xFFFFFFFF),
    ).fetchone()
    return f"pid {row[0]} from {row[1]}" if row else None
