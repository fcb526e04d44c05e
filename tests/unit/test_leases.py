"""LeaseKeeper and the reaper's re-sending, on a fixed clock.

The store and queue here are small in-memory stand-ins: what these tests pin down is timing
(when to renew, when an unreachable store means the lease is lost, how re-sends back off),
which the real-process tests in tests/e2e/test_worker_processes.py can't make deterministic.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import pytest

from controlroom.commands.execution.reaper import LeaseKeeper, LeaseTiming, Reaper

TIMEOUT_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Store:
    held: bool = True
    down: bool = False
    renewals: int = 0

    def take(self, run_id: UUID, attempt: int, worker_id: str, ttl_s: float) -> bool:
        return self.held

    def renew(self, run_id: UUID, attempt: int, worker_id: str, ttl_s: float) -> bool:
        if self.down:
            raise OSError("database unreachable")
        self.renewals += 1
        return self.held


def keeper(store: Store, clock: Clock) -> LeaseKeeper:
    k = LeaseKeeper(store, uuid4(), 1, "host:1", TIMEOUT_S, clock=clock)  # type: ignore[arg-type]
    assert k.take()
    return k


RENEW_S = LeaseTiming.of(TIMEOUT_S).renew_s
CERTAIN_S = LeaseTiming.of(TIMEOUT_S).certain_s


def test_a_lease_is_renewed_every_renew_interval() -> None:
    store, clock = Store(), Clock()
    k = keeper(store, clock)
    clock.now += RENEW_S - 1
    assert k.tick() and store.renewals == 0
    clock.now += 1
    assert k.tick() and store.renewals == 1
    clock.now += 1
    assert k.tick() and store.renewals == 1


def test_a_lease_found_gone_is_lost_for_good() -> None:
    store, clock = Store(), Clock()
    k = keeper(store, clock)
    store.held = False
    clock.now += RENEW_S
    assert not k.tick()
    store.held = True
    clock.now += RENEW_S
    assert not k.tick() and not k.held()


def test_an_unreachable_store_costs_the_lease_before_it_could_lapse() -> None:
    store, clock = Store(down=True), Clock()
    k = keeper(store, clock)
    clock.now += RENEW_S
    assert k.tick()  # a blip: the lease is certainly ours for a while more
    clock.now += CERTAIN_S - RENEW_S - 0.1
    assert k.tick() and k.held()
    clock.now += 0.1
    assert not k.held() and not k.tick()
    assert CERTAIN_S < TIMEOUT_S  # killed before the database could let the lease go


def test_the_store_answering_again_restores_certainty() -> None:
    store, clock = Store(down=True), Clock()
    k = keeper(store, clock)
    clock.now += CERTAIN_S - 2
    assert k.tick()
    store.down = False
    clock.now += 1  # past the backoff
    assert k.tick() and store.renewals == 1
    assert k.certain_until == clock.now + CERTAIN_S


def test_the_watchdog_kills_the_job_when_renewals_fail() -> None:
    store = Store(down=True)
    timing = LeaseTiming(timeout_s=0.6, renew_s=0.1, margin_s=0.1, reap_grace_s=3.0)
    k = LeaseKeeper(store, uuid4(), 1, "host:1", timing)  # type: ignore[arg-type]
    assert k.take()
    killed = threading.Event()
    with k.guard(killed.set):
        assert killed.wait(10)  # a liveness bound: it fires after 0.5 s
    assert not k.held()


def test_the_watchdog_leaves_a_renewed_lease_alone() -> None:
    store = Store()
    timing = LeaseTiming(timeout_s=0.6, renew_s=0.1, margin_s=0.1, reap_grace_s=3.0)
    k = LeaseKeeper(store, uuid4(), 1, "host:1", timing)  # type: ignore[arg-type]
    assert k.take()
    killed = threading.Event()
    with k.guard(killed.set):
        time.sleep(1.5)
    assert not killed.is_set() and store.renewals >= 3


@pytest.mark.parametrize(("timing", "why"), [
    (LeaseTiming.of(60, renew_s=30), "renew interval"),
    (LeaseTiming.of(60, reap_grace_s=5), "reaper grace"),
    (LeaseTiming.of(1.2), "kill may take"),
])
def test_timings_that_break_fencing_are_refused(timing: LeaseTiming, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        timing.check()


def test_the_defaults_hold_renew_timeout_and_grace_apart() -> None:
    t = LeaseTiming.of(60).check()
    assert (t.renew_s, t.certain_s, t.reap_grace_s) == (10, 50, 60)


def test_without_a_store_there_is_nothing_to_lose() -> None:
    k = LeaseKeeper(None, uuid4(), 1, "host:1", TIMEOUT_S)
    assert k.take() and k.held() and k.tick()


@dataclass
class Queue:
    sent: list[tuple[UUID, int, datetime | None]] = field(default_factory=list)

    def enqueue(self, run_id: UUID, attempt: int, not_before: datetime | None = None) -> None:
        self.sent.append((run_id, attempt, not_before))


def test_queued_runs_left_waiting_are_re_sent_with_a_growing_backoff() -> None:
    run_id, clock, queue = uuid4(), Clock(), Queue()
    run = SimpleNamespace(status="queued", attempt=1, not_before=None)
    commands: Any = SimpleNamespace(load=lambda _: run)
    sweep: Any = SimpleNamespace(queued_and_due=lambda *_: [(run_id, 1)])
    reaper = Reaper(commands, None, sweep, queue, lease_timeout_s=TIMEOUT_S,  # type: ignore[arg-type]
                    clock=clock)

    def resends_at(seconds: list[float]) -> list[int]:
        counts = []
        for s in seconds:
            clock.now = 1000.0 + s
            reaper._resend(sweep.queued_and_due())
            counts.append(len(queue.sent))
        return counts

    # at once, then after one timeout, then two more, then four more
    assert resends_at([0, 29, 30, 89, 90, 209, 210]) == [1, 1, 2, 2, 3, 3, 4]
    run.status = "running"
    assert resends_at([1000]) == [4]


class PoolTimeout(Exception):
    """What a connection pool still reconnecting after a database restart raises."""


@dataclass
class ReconnectingStore(Store):
    failures: int = 2

    def take(self, run_id: UUID, attempt: int, worker_id: str, ttl_s: float) -> bool:
        if self.failures:
            self.failures -= 1
            raise PoolTimeout("couldn't get a connection after 5.00 sec")
        return self.held


def test_a_worker_waits_out_a_database_just_back_to_take_its_lease() -> None:
    """The start was recorded, then taking the lease failed: the attempt must not be abandoned."""
    from controlroom.commands.execution.worker import RunWorker

    store = ReconnectingStore()
    worker = SimpleNamespace(lease_timing=LeaseTiming.of(TIMEOUT_S), stopping=threading.Event())
    lease = LeaseKeeper(store, uuid4(), 1, "host:1", TIMEOUT_S)  # type: ignore[arg-type]
    assert RunWorker._take(worker, lease, uuid4(), 1)  # type: ignore[arg-type]
    assert store.failures == 0


def test_a_worker_does_not_retry_a_lease_error_that_is_not_the_database_being_away() -> None:
    from controlroom.commands.execution.worker import RunWorker

    class Broken(Store):
        def take(self, run_id: UUID, attempt: int, worker_id: str, ttl_s: float) -> bool:
            raise ValueError("a bug, not an outage")

    worker = SimpleNamespace(lease_timing=LeaseTiming.of(TIMEOUT_S), stopping=threading.Event())
    lease = LeaseKeeper(Broken(), uuid4(), 1, "host:1", TIMEOUT_S)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RunWorker._take(worker, lease, uuid4(), 1)  # type: ignore[arg-type]
