"""Leases on running attempts, and the reaper that acts when a worker stops renewing one.

A worker takes its attempt's lease right after it wins the start and renews it every
timeout/3; the reaper fails attempts whose lease expired (`worker_lost`, after which the
domain's retry policy decides), fails running attempts that never got a lease, and re-sends
queued runs that sat due for long: the log is the queue of record, the broker only a cache.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol
from uuid import UUID

from controlroom.commands.errors import RunNotFoundError
from controlroom.commands.handlers import RunCommands
from controlroom.commands.ports import RunQueue
from controlroom.domain.errors import DomainError

log = logging.getLogger("controlroom.reaper")

DEFAULT_LEASE_TIMEOUT_S = 60.0
MAX_REAP_INTERVAL_S = 5.0
MAX_RESEND_BACKOFF_S = 900.0
"""A queued run still waiting after a re-send is re-sent again after 2x, 4x, … this long at most."""


class LeaseStore(Protocol):
    """Leases of running attempts (operational state kept beside the log, not in it)."""

    def take(self, run_id: UUID, attempt: int, worker_id: str, ttl_s: float) -> bool:
        """Take the lease for `attempt`; False if another holds it."""
        ...

    def renew(self, run_id: UUID, attempt: int, worker_id: str, ttl_s: float) -> bool:
        """Extend our lease; False once it is gone or someone else's."""
        ...

    def release(self, run_id: UUID, attempt: int, worker_id: str) -> None:
        """Drop our lease (the attempt ended)."""
        ...

    def claim_expired(self, limit: int) -> list[tuple[UUID, int]]:
        """Delete expired leases and return their (run_id, attempt): the reaper's claim."""
        ...


class RunSweep(Protocol):
    """Where the reaper looks for runs that need it (a read model: decisions use the log)."""

    def running_without_lease(self, started_before_s: float, limit: int) -> list[UUID]:
        """Running runs started over `started_before_s` ago that hold no lease."""
        ...

    def queued_and_due(self, due_for_s: float, limit: int) -> list[tuple[UUID, int]]:
        """(run_id, attempt) of queued runs that have been due to start for over `due_for_s`."""
        ...


class LeaseKeeper:
    """One attempt's lease, as its worker holds it: renewed when due, lost for good once lost."""

    def __init__(
        self, store: LeaseStore | None, run_id: UUID, attempt: int, worker_id: str,
        timeout_s: float, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.run_id, self.attempt, self.worker_id = store, run_id, attempt, worker_id
        self.timeout_s = timeout_s
        self.clock = clock
        self.confirmed_at = clock()
        self.lost = False

    def take(self) -> bool:
        """Take the lease (True without a store: nothing to fence against)."""
        if self.store is None:
            return True
        self.confirmed_at = self.clock()
        self.lost = not self.store.take(self.run_id, self.attempt, self.worker_id, self.timeout_s)
        return not self.lost

    def held(self) -> bool:
        """Renew when a third of the timeout has passed; False once the lease is lost."""
        if self.store is None or self.lost:
            return not self.lost
        now = self.clock()
        if now - self.confirmed_at < self.timeout_s / 3:
            return True
        try:
            if self.store.renew(self.run_id, self.attempt, self.worker_id, self.timeout_s):
                self.confirmed_at = now
            else:
                self.lost = True
        except Exception as e:
            # Unconfirmed for a whole timeout, the reaper may have handed the run on: stop.
            log.warning("run %s: could not renew its lease: %s", self.run_id, e)
            self.lost = now - self.confirmed_at >= self.timeout_s
        return not self.lost

    def release(self) -> None:
        """Give the lease back; a failure only leaves it to expire."""
        if self.store is None or self.lost:
            return
        try:
            self.store.release(self.run_id, self.attempt, self.worker_id)
        except Exception as e:
            log.warning("run %s: could not release its lease: %s", self.run_id, e)


class Reaper:
    """Sweeps every few seconds; hosted like a projection, so one is active per deployment."""

    BATCH = 200
    RESEND_BATCH = 2000

    def __init__(
        self, commands: RunCommands, leases: LeaseStore, sweep: RunSweep, queue: RunQueue, *,
        lease_timeout_s: float, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.commands, self.leases, self.sweep, self.queue = commands, leases, sweep, queue
        self.lease_timeout_s = lease_timeout_s
        self.interval_s = min(MAX_REAP_INTERVAL_S, lease_timeout_s / 3)
        self.clock = clock
        self.is_interrupted = threading.Event()
        self._resent: dict[tuple[UUID, int], tuple[float, float]] = {}  # -> (when, backoff)

    def __enter__(self) -> Reaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.is_interrupted.set()

    def run_forever(self, timeout: float) -> None:
        """Sweep, then wait for the next sweep (at most `timeout` seconds): a runner's contract."""
        self.sweep_once()
        self.is_interrupted.wait(min(timeout, self.interval_s))

    def sweep_once(self) -> None:
        """One pass: expired leases, running runs without one, queued runs left waiting."""
        for run_id, attempt in self.leases.claim_expired(self.BATCH):
            self._fail_lost(run_id, attempt, "the worker stopped renewing its lease")
        for run_id in self.sweep.running_without_lease(self.lease_timeout_s, self.BATCH):
            self._fail_lost(run_id, None, "no worker held a lease on the running attempt")
        self._resend(self.sweep.queued_and_due(self.lease_timeout_s, self.RESEND_BATCH))

    def _fail_lost(self, run_id: UUID, attempt: int | None, message: str) -> None:
        try:
            run = self.commands.load(run_id)
            if run.status != "running" or attempt not in (None, run.attempt):
                return  # the attempt ended (or moved on) after the lease lapsed
            self.commands.fail(run_id, reason="worker_lost", message=message, exit_code=None,
                               attempt=run.attempt)
            log.warning("run %s attempt %s: worker lost (%s)", run_id, run.attempt, message)
        except (DomainError, RunNotFoundError) as e:
            log.info("run %s: nothing to reap (%s)", run_id, e)

    def _resend(self, due: list[tuple[UUID, int]]) -> None:
        now = self.clock()
        waiting: dict[tuple[UUID, int], tuple[float, float]] = {}
        for key in due:
            when, backoff = self._resent.get(key, (-float("inf"), self.lease_timeout_s / 2))
            if now - when >= backoff and self._send_if_queued(*key):
                when, backoff = now, min(backoff * 2, MAX_RESEND_BACKOFF_S)
            waiting[key] = (when, backoff)
        self._resent = waiting

    def _send_if_queued(self, run_id: UUID, attempt: int) -> bool:
        try:
            run = self.commands.load(run_id)
        except RunNotFoundError:
            return False
        if run.status != "queued" or run.attempt != attempt:
            return False
        self.queue.enqueue(run_id, run.attempt, run.not_before)
        log.info("run %s attempt %s: re-sent to the queue", run_id, run.attempt)
        return True
