"""Keeps a projection running in exactly one process: the holder of its advisory lock."""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from typing import Any

import psycopg
from eventsourcing.projection import ProjectionRunner

from controlroom.projections.rebuild import Rebuild, log_head
from controlroom.projections.view import BATCH_EVENTS, LogAhead, ReadModelView

log = logging.getLogger("controlroom.projections")

STANDBY_RETRY_S = 2.0
RESTART_BACKOFF_S = 1.0
LOCK_NAMESPACE = 0x0C0E  # keeps our advisory lock keys apart from other applications'


def lock_key(name: str) -> int:
    """The advisory lock id of a projection."""
    return (LOCK_NAMESPACE << 32) | zlib.crc32(name.encode())


class ProjectionHost:
    """Runs `make_runner()` while holding the projection's lock; restarts it after errors.

    With a `rebuild`, it also carries out the rebuilds asked of this projection (rebuild.py).
    """

    def __init__(
        self, name: str, dsn: str, make_runner: Callable[[], ProjectionRunner[Any, Any]],
        *, rebuild: Rebuild | None = None,
    ) -> None:
        self.name = name
        self.dsn = dsn
        self.make_runner = make_runner
        self.rebuild = rebuild
        self.active = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"projection-{name}", daemon=True)
        self.runner: ProjectionRunner[Any, Any] | None = None

    def start(self) -> ProjectionHost:
        """Begin trying to take the lock and run."""
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Tell the runner to stop, without waiting: hosts stopping together stop in parallel."""
        self._stop.set()
        runner = self.runner
        if runner is None:
            return
        if isinstance(runner, ProjectionRunner):
            runner.stop()  # wakes its run_forever now rather than at the end of its timeout
        elif isinstance(event := getattr(runner, "is_interrupted", None), threading.Event):
            event.set()

    def stop(self) -> None:
        """Stop the runner and release the lock."""
        self.request_stop()
        self._thread.join(timeout=15)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as lock_conn:
                    if self._take_lock(lock_conn):
                        self._serve(lock_conn)
            except Exception as e:
                log.warning("projection %s interrupted: %s", self.name, e)
            self.active.clear()
            self._stop.wait(STANDBY_RETRY_S)

    def _take_lock(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(self.name),)).fetchone()
        if not (row and row[0]):
            log.debug("projection %s: standby (another process holds it)", self.name)
            return False
        return True

    def _serve(self, lock_conn: psycopg.Connection[Any]) -> None:
        try:
            while not self._stop.is_set():
                if self.rebuild is not None and self.rebuild.pending(lock_conn):
                    self._reset(lock_conn, self.rebuild)
                self._run(lock_conn)
        finally:
            self.runner = None
            self._stop.wait(RESTART_BACKOFF_S)

    def _run(self, lock_conn: psycopg.Connection[Any]) -> None:
        """Run the projection until stopped, or until a rebuild is asked for."""
        catch_up_to = self._far_behind(lock_conn)
        runner = self.make_runner()
        view = getattr(runner, "view", None)
        if isinstance(view, ReadModelView):
            view.catch_up_to = catch_up_to
            view.more_waiting = LogAhead(tuple(runner.projection.topics))
        try:
            with runner:
                self.runner = runner
                self.active.set()
                log.info("projection %s: active", self.name)
                while not self._stop.is_set():
                    runner.run_forever(timeout=1.0)
                    if runner.is_interrupted.is_set():
                        if self._stop.is_set():
                            return  # stopped by request_stop
                        raise RuntimeError("runner stopped")
                    # Also proves the lock's session is alive: if it is gone, step down.
                    if self.rebuild is None:
                        lock_conn.execute("SELECT 1")
                    elif self.rebuild.pending(lock_conn):
                        return
        finally:
            if isinstance(view, ReadModelView):
                view.abandon_batch()  # its runner has stopped: nothing else will end it

    def _far_behind(self, lock_conn: psycopg.Connection[Any]) -> int:
        """The log position to catch up to in batches, 0 when the projection is (nearly) live."""
        if self.rebuild is None:
            return 0
        head = log_head(lock_conn, self.rebuild.topics)
        return head if head - self.rebuild.position(lock_conn) > BATCH_EVENTS else 0

    def _reset(self, lock_conn: psycopg.Connection[Any], rebuild: Rebuild) -> None:
        try:
            target = rebuild.reset(lock_conn)
        except psycopg.OperationalError:
            raise  # the database is away: the request stays pending for the next holder
        except Exception as e:
            rebuild.failed(lock_conn, e)
            raise
        log.warning("projection %s: rebuilding from the log, up to position %d", self.name, target)


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
