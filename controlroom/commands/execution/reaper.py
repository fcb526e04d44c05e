"""Leases on running attempts, and the reaper that acts when a worker stops renewing one.

A worker takes its attempt's lease right after it wins the start and renews it every
`renew_s` from a thread of its own; the reaper fails attempts whose lease expired over
`reap_grace_s` ago (`worker_lost`, after which the domain's retry policy decides), fails
running attempts that never got a lease, and re-sends queued runs that sat due for long: the
log is the queue of record, the broker only a cache.

Fencing: the worker knows until when its lease is *certainly* valid — when its last
successful renewal was sent, plus the timeout, minus a margin, on its monotonic clock (the
database set the expiry from a later instant of its own clock) — and a watchdog kills the
job the moment that passes without a renewal, whatever the database or the supervision loop
is doing. The reaper acts only `reap_grace_s` after the expiry, so the job is dead before
another attempt may start: renew interval ≪ lease timeout ≪ margin + reaper grace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from controlroom.commands.errors import RunNotFoundError
from controlroom.commands.ports import RunQueue
from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.errors import DomainError
from controlroom.domain.runs.status import RunStatus

log = logging.getLogger("controlroom.reaper")

DEFAULT_LEASE_TIMEOUT_S = 60.0
RENEW_FRACTION = 1 / 6
"""Renew every timeout/6 by default: five tries (with backoff between) before the lease lapses."""
MARGIN_FRACTION = 1 / 6
"""A worker kills its job this share of the timeout before its lease could lapse."""
REAP_GRACE_FRACTION = 1.0
"""The reaper waits this share of the timeout past a lease's expiry before it fails the attempt."""
FENCE_KILL_ALLOWANCE_S = 3.0
"""Time a fenced job's kill may take (SIGTERM, 2 s grace, SIGKILL) plus the watchdog's wake-up:
margin + reaper grace must exceed it, or the reaper could start an attempt beside a dying one."""
MAX_RENEW_BACKOFF_S = 5.0
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

    def claim_expired(self, limit: int, grace_s: float = 0.0) -> list[tuple[UUID, int]]:
        """Delete leases expired over `grace_s` ago and return their (run_id, attempt)."""
        ...


class RunSweep(Protocol):
    """Where the reaper looks for runs that need it (a read model: decisions use the log)."""

    def running_without_lease(self, started_before_s: float, limit: int) -> list[UUID]:
        """Running runs started over `started_before_s` ago that hold no lease."""
        ...

    def queued_and_due(self, due_for_s: float, limit: int) -> list[tuple[UUID, int]]:
        """(run_id, attempt) of queued runs that have been due to start for over `due_for_s`."""
        ...


@dataclass(frozen=True)
class LeaseTiming:
    """How a lease is renewed, fenced and reaped; `check()` refuses timings that break fencing."""

    timeout_s: float
    renew_s: float
    margin_s: float
    reap_grace_s: float

    @classmethod
    def of(cls, timeout_s: float, renew_s: float | None = None,
           reap_grace_s: float | None = None) -> LeaseTiming:
        """The defaults derived from the timeout, overridden where given."""
        return cls(timeout_s=timeout_s,
                   renew_s=renew_s if renew_s is not None else timeout_s * RENEW_FRACTION,
                   margin_s=timeout_s * MARGIN_FRACTION,
                   reap_grace_s=(reap_grace_s if reap_grace_s is not None
                                 else timeout_s * REAP_GRACE_FRACTION))

    @property
    def certain_s(self) -> float:
        """How long after a renewal was sent the lease is certainly still ours."""
        return self.timeout_s - self.margin_s

    def check(self) -> LeaseTiming:
        """Raise ValueError unless renew ≪ timeout ≪ margin + reaper grace (returns self)."""
        if not 0 < self.renew_s <= self.certain_s / 3:
            raise ValueError(
                f"lease renew interval {self.renew_s:g} s must be positive and at most a third "
                f"of the lease timeout minus its margin ({self.certain_s:g} s): a worker must "
                "get several tries at renewing before it has to kill its job")
        if self.reap_grace_s < self.timeout_s / 2:
            raise ValueError(
                f"reaper grace {self.reap_grace_s:g} s must be at least half the lease timeout "
                f"({self.timeout_s:g} s)")
        if self.margin_s + self.reap_grace_s < FENCE_KILL_ALLOWANCE_S:
            raise ValueError(
                f"lease margin + reaper grace ({self.margin_s + self.reap_grace_s:g} s) must "
                f"exceed {FENCE_KILL_ALLOWANCE_S:g} s, the time a fenced job's kill may take")
        return self


class LeaseKeeper:
    """One attempt's lease, as its worker holds it: renewed when due, lost for good once lost.

    `guard(kill)` renews from a thread of its own and runs a watchdog that calls `kill` when
    the lease is no longer certainly valid; `tick()` is one renewal step (tests drive it).
    """

    def __init__(
        self, store: LeaseStore | None, run_id: UUID, attempt: int, worker_id: str,
        timing: LeaseTiming | float, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.run_id, self.attempt, self.worker_id = store, run_id, attempt, worker_id
        self.timing = timing if isinstance(timing, LeaseTiming) else LeaseTiming.of(timing)
        self.timeout_s = self.timing.timeout_s
        self.clock = clock
        self.confirmed_at = clock()
        self.certain_until = self.confirmed_at + self.timing.certain_s
        self.lost = False
        self.ended = False
        """The job's process is over: the lease now only keeps the reaper off the attempt while
        its outcome waits to be recorded, so it is renewed for as long as that takes."""
        self._next_try = 0.0
        self._backoff = 0.0
        self._changed = threading.Condition()
        self._stopped = False

    def take(self) -> bool:
        """Take the lease (True without a store: nothing to fence against)."""
        if self.store is None:
            return True
        sent = self.clock()
        self.lost = not self.store.take(self.run_id, self.attempt, self.worker_id, self.timeout_s)
        self._confirm(sent)
        return not self.lost

    def held(self) -> bool:
        """Whether the lease is certainly still ours (no database call)."""
        if self.store is None:
            return True
        return not self.lost and self.clock() < self.certain_until

    def tick(self) -> bool:
        """Renew when due (one try; errors back off); False once the lease is lost."""
        if self.store is None:
            return True
        now = self.clock()
        if self.lost or (now >= self.certain_until and not self.ended):
            self._lose()
            return False
        if now - self.confirmed_at < self.timing.renew_s or now < self._next_try:
            return True
        try:
            renewed = self.store.renew(self.run_id, self.attempt, self.worker_id, self.timeout_s)
        except Exception as e:  # the database is away: try again soon, while still certain
            self._backoff = min(max(self._backoff * 2, 0.25), MAX_RENEW_BACKOFF_S,
                                self.timing.renew_s)
            self._next_try = self.clock() + self._backoff
            log.warning("run %s: could not renew its lease (certain for %.1f s more): %s",
                        self.run_id, self.certain_until - self.clock(), e)
            return self.held()
        if not renewed:
            self._lose()
            return False
        self._backoff = 0.0
        self._confirm(now)
        return True

    def end_job(self) -> bool:
        """The job's process ended (by itself, or killed by its supervision): from now on
        nothing runs that fencing must stop, and renewals go on past `certain_until` — the
        reaper stays off while the attempt's spooled outcome waits for the database. False if
        the lease was lost first (its watchdog may have ended the job: not the job's outcome).
        """
        if self.store is None:
            return True
        with self._changed:
            if self.lost:
                return False
            self.ended = True
            self._changed.notify_all()
            return True

    def guard(self, kill: Callable[[], None],
              exited: Callable[[], bool] | None = None) -> LeaseGuard:
        """Renew in the background and kill the job once the lease is not certainly ours —
        unless `exited()` says its process already ended by itself (see LeaseGuard)."""
        return LeaseGuard(self, kill, exited)

    def wait_change(self, timeout: float) -> None:
        """Sleep up to `timeout`, waking early when the lease is lost or the guard stops."""
        with self._changed:
            if not (self.lost or self._stopped):
                self._changed.wait(max(timeout, 0.0))

    def stop(self) -> None:
        """Stop the background threads (the attempt ended)."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def release(self) -> None:
        """Give the lease back; a failure only leaves it to expire."""
        self.stop()
        if self.store is None or self.lost:
            return
        try:
            self.store.release(self.run_id, self.attempt, self.worker_id)
        except Exception as e:
            log.warning("run %s: could not release its lease: %s", self.run_id, e)

    def _confirm(self, sent_at: float) -> None:
        # The database computed the expiry from its clock when the statement ran, which was
        # after `sent_at`: counting from `sent_at` can only under-estimate the lease.
        with self._changed:
            self.confirmed_at = sent_at
            self.certain_until = sent_at + self.timing.certain_s
            self._changed.notify_all()

    def _lose(self) -> None:
        with self._changed:
            self.lost = True
            self._changed.notify_all()


class LeaseGuard:
    """The renewer and the watchdog of one attempt's lease, while the job runs."""

    def __init__(self, keeper: LeaseKeeper, kill: Callable[[], None],
                 exited: Callable[[], bool] | None = None) -> None:
        self.keeper, self.kill = keeper, kill
        self.exited = exited or (lambda: False)
        self.fenced = threading.Event()
        name = f"lease-{keeper.run_id}"
        self._threads = [threading.Thread(target=self._renew, name=f"{name}-renew", daemon=True),
                         threading.Thread(target=self._watch, name=f"{name}-watch", daemon=True)]

    def __enter__(self) -> LeaseGuard:
        if self.keeper.store is not None:
            for t in self._threads:
                t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.keeper.stop()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=FENCE_KILL_ALLOWANCE_S + 1)

    def _renew(self) -> None:
        k = self.keeper
        while not k._stopped and k.tick():
            due = max(k.confirmed_at + k.timing.renew_s, k._next_try) - k.clock()
            k.wait_change(due if k.ended else min(due, k.certain_until - k.clock()))

    def _watch(self) -> None:
        # Apart from the renewer: a renewal stuck in the network must not delay the kill.
        k = self.keeper
        with k._changed:
            while (not k._stopped and not k.lost and not k.ended
                   and (left := k.certain_until - k.clock()) > 0):
                k._changed.wait(left)
            if k._stopped or k.ended:
                return
            # A job that ended by itself before its lease lapsed has nothing left to fence:
            # its exit is its outcome, the worker's to record (its supervision may be stuck
            # waiting on the database and not have noticed yet).
            natural = self.exited()
            if natural:
                k.ended = True
            else:
                k.lost = True
            k._changed.notify_all()
        if natural:
            self.kill()  # whatever of its process group outlived it: no run past the lease
            return
        log.warning("run %s attempt %s: lease not renewed in time; killing the job",
                    k.run_id, k.attempt)
        self.fenced.set()
        self.kill()


class Reaper:
    """Sweeps every few seconds; hosted like a projection, so one is active per deployment."""

    BATCH = 200
    RESEND_BATCH = 2000

    def __init__(
        self, commands: RunCommands, leases: LeaseStore, sweep: RunSweep, queue: RunQueue, *,
        lease_timeout_s: float, reap_grace_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.commands, self.leases, self.sweep, self.queue = commands, leases, sweep, queue
        self.lease_timeout_s = lease_timeout_s
        self.reap_grace_s = LeaseTiming.of(lease_timeout_s, reap_grace_s=reap_grace_s).reap_grace_s
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
        for run_id, attempt in self.leases.claim_expired(self.BATCH, self.reap_grace_s):
            self._fail_lost(run_id, attempt, "the worker stopped renewing its lease")
        for run_id in self.sweep.running_without_lease(
                self.lease_timeout_s + self.reap_grace_s, self.BATCH):
            self._fail_lost(run_id, None, "no worker held a lease on the running attempt")
        self._resend(self.sweep.queued_and_due(self.lease_timeout_s, self.RESEND_BATCH))

    def _fail_lost(self, run_id: UUID, attempt: int | None, message: str) -> None:
        try:
            run = self.commands.load(run_id)
            if run.status != RunStatus.RUNNING or attempt not in (None, run.attempt):
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
        if run.status != RunStatus.QUEUED or run.attempt != attempt:
            return False
        self.queue.enqueue(run_id, run.attempt, run.not_before)
        log.info("run %s attempt %s: re-sent to the queue", run_id, run.attempt)
        return True
