"""The Run aggregate keeps its lifecycle invariants under any sequence of commands.

A hypothesis state machine drives random commands (with right and wrong attempts, with
and without a retry policy) against a live `Run` and a small model of the expected
status. After every step it proves that:

- the status is one of the five RunStatus values and matches the model;
- a command either records exactly the expected events or raises a DomainError and
  records nothing;
- nothing is recorded once the run is completed, cancelled, or failed with no retry;
- event versions are contiguous from 1, and each attempt starts at most once;
- `failed → queued` happens only while retries remain (attempt <= max_retries + 1);
- replaying the recorded events rebuilds the same status, attempt and cancel flag.

Once a run finishes, the machine may submit another, so one example covers several lifecycles."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from controlroom.domain.errors import AttemptMismatchError, DomainError, InvalidTransitionError
from controlroom.domain.runs.retry import RetryPolicy
from controlroom.domain.runs.run import Run
from controlroom.domain.runs.status import RunStatus

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
STATUSES = {s.value for s in RunStatus}
TERMINAL = {RunStatus.COMPLETED.value, RunStatus.CANCELLED.value}
QUEUED, RUNNING, FAILED = RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.FAILED.value

words = st.text(max_size=12)
policies = st.builds(
    RetryPolicy,
    base_delay_s=st.floats(0.0, 60.0),
    max_delay_s=st.floats(0.0, 600.0),
)


def submit_run(*, max_retries: int = 0, now: datetime = EPOCH, **overrides: Any) -> Run:
    """A freshly submitted run, as the submit handler builds it."""
    fields: dict[str, Any] = {
        "tenant_id": "tenant-a",
        "job_type": "spark_etl",
        "created_by": "alice",
        "code": {"files": [{"path": "main.py", "content": "print('hi')"}]},
        "spec": {},
        "sealed_secrets": None,
        "timeout_s": 60,
        "max_retries": max_retries,
        "labels": {},
        "callbacks": {},
        "idempotency_key": None,
        "request_hash": "hash",
        "job_name": "job",
        "submitted_at": now,
    }
    fields.update(overrides)
    return Run.submit(run_id=uuid4(), **fields)


def replay(events: Sequence[Any]) -> Run:
    """The aggregate rebuilt from its events alone."""
    return functools.reduce(lambda agg, e: e.mutate(agg), events, None)


def names(events: Sequence[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


class RunMachine(RuleBasedStateMachine):
    """Random command sequences against one Run, checked against a model of its status."""

    @initialize(max_retries=st.integers(0, 3))
    def submit(self, max_retries: int) -> None:
        self.now = EPOCH
        self.submit_a_run(max_retries)

    @precondition(lambda self: not self.active)
    @rule(max_retries=st.integers(0, 3))
    def submit_another_run_once_this_one_finished(self, max_retries: int) -> None:
        self.submit_a_run(max_retries)

    def submit_a_run(self, max_retries: int) -> None:
        self.run = submit_run(max_retries=max_retries, now=self.tick())
        self.collected: list[Any] = []
        self.max_retries = max_retries
        self.status = QUEUED
        self.attempt = 1
        self.cancel_requested = False
        self.recorded_when_finished: int | None = None

    # -- helpers ---------------------------------------------------------------

    @property
    def events(self) -> list[Any]:
        return [*self.collected, *self.run.pending_events]

    @property
    def active(self) -> bool:
        return self.status in (QUEUED, RUNNING)

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def refused(self, error: type[DomainError], command: Callable[[], Any]) -> None:
        """`command` raises `error` and leaves the run exactly as it was."""
        before = self.snapshot()
        with pytest.raises(error):
            command()
        assert self.snapshot() == before

    def snapshot(self) -> tuple[Any, ...]:
        run = self.run
        return (len(run.pending_events), run.version, run.status, run.attempt, run.cancel_requested)

    def records(self, expected: list[str], command: Callable[[], Any]) -> Any:
        """`command` succeeds and records exactly `expected`, in order."""
        already = len(self.run.pending_events)
        result = command()
        assert names(self.run.pending_events[already:]) == expected
        return result

    def finish(self, status: str) -> None:
        self.status = status
        self.recorded_when_finished = len(self.events)

    # -- rules -----------------------------------------------------------------

    @rule(seconds=st.integers(0, 10**6))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def collect(self) -> None:
        self.collected.extend(self.run.collect_events())
        assert self.run.pending_events == []

    @rule(worker=words)
    def start_the_current_attempt(self, worker: str) -> None:
        self.start(0, worker)

    @rule(offset=st.sampled_from([-1, 1, 2]), worker=words)
    def start_a_wrong_attempt(self, offset: int, worker: str) -> None:
        self.start(offset, worker)

    def start(self, offset: int, worker: str) -> None:
        now = self.tick()

        def command() -> None:
            self.run.start(attempt=self.attempt + offset, worker_id=worker, now=now)

        if self.status != QUEUED:
            self.refused(InvalidTransitionError, command)
        elif offset != 0:
            self.refused(AttemptMismatchError, command)
        else:
            self.records(["RunStarted"], command)
            self.status = RUNNING
            assert self.run.started_at == now
            assert self.run.worker_id == worker

    @rule(percent=st.none() | st.floats(0, 100), message=words)
    def progress(self, percent: float | None, message: str) -> None:
        now = self.tick()
        self.active_only(
            "RunProgressed", lambda: self.run.progress(percent=percent, message=message, now=now)
        )

    @rule(text=words, stream=st.sampled_from(["stdout", "stderr"]), lines=st.integers(1, 9))
    def log(self, text: str, stream: str, lines: int) -> None:
        now = self.tick()
        self.active_only("RunLogged", lambda: self.run.log(text=text, stream=stream, lines=lines, now=now))
        if self.active:
            assert self.run.pending_events[-1].attempt == self.attempt

    @rule(name=words)
    def add_artifact(self, name: str) -> None:
        now = self.tick()
        self.active_only(
            "ArtifactAdded", lambda: self.run.add_artifact(artifact={"name": name, "size": 1}, now=now)
        )

    @rule(source=words, written=words)
    def record_lineage(self, source: str, written: str) -> None:
        now = self.tick()
        self.active_only(
            "LineageEdgeRecorded", lambda: self.run.record_lineage(source=source, target=written, now=now)
        )

    def active_only(self, event: str, command: Callable[[], Any]) -> None:
        if self.active:
            self.records([event], command)
        else:
            self.refused(InvalidTransitionError, command)

    @rule(exit_code=st.none() | st.integers(0, 255))
    def complete(self, exit_code: int | None) -> None:
        now = self.tick()

        def command() -> None:
            self.run.complete(summary="done", exit_code=exit_code, now=now)

        if self.status != RUNNING:
            self.refused(InvalidTransitionError, command)
        else:
            self.records(["RunCompleted"], command)
            self.finish(RunStatus.COMPLETED.value)
            assert self.run.finished_at == now

    @rule(policy=policies, exit_code=st.none() | st.integers(1, 255))
    def fail_with_a_retry_policy(self, policy: RetryPolicy, exit_code: int | None) -> None:
        self.fail(policy, exit_code)

    @rule(exit_code=st.none() | st.integers(1, 255))
    def fail_without_a_retry_policy(self, exit_code: int | None) -> None:
        self.fail(None, exit_code)

    def fail(self, policy: RetryPolicy | None, exit_code: int | None) -> None:
        now = self.tick()

        def command() -> None:
            self.run.fail(reason="exit_code", message="boom", exit_code=exit_code, now=now, retry=policy)

        if not self.active:
            self.refused(InvalidTransitionError, command)
        elif policy is not None and not self.cancel_requested and self.attempt <= self.max_retries:
            self.records(["RunFailed", "RunRetryScheduled"], command)
            assert self.run.pending_events[-2].retrying  # read models never show it as final
            scheduled = self.run.pending_events[-1]
            assert scheduled.not_before == now + timedelta(seconds=policy.delay(self.attempt))
            self.attempt += 1
            self.status = QUEUED
            self.cancel_requested = False
            assert self.run.started_at is None
            assert self.run.finished_at is None
        else:
            self.records(["RunFailed"], command)
            assert not self.run.pending_events[-1].retrying
            self.finish(FAILED)
            assert self.run.finished_at == now

    @rule(by=words)
    def request_cancel(self, by: str) -> None:
        now = self.tick()

        def command() -> bool:
            return self.run.request_cancel(by=by, now=now)

        if not self.active:
            self.refused(InvalidTransitionError, command)
        elif self.cancel_requested:
            assert self.records([], command) is False
        elif self.status == QUEUED:
            assert self.records(["RunCancelRequested", "RunCancelled"], command) is True
            self.cancel_requested = True
            self.finish(RunStatus.CANCELLED.value)
        else:
            assert self.records(["RunCancelRequested"], command) is True
            self.cancel_requested = True

    @rule(reason=words)
    def confirm_cancelled(self, reason: str) -> None:
        now = self.tick()

        def command() -> None:
            self.run.confirm_cancelled(reason=reason, now=now)

        if self.status == RUNNING and self.cancel_requested:
            self.records(["RunCancelled"], command)
            self.finish(RunStatus.CANCELLED.value)
        else:
            self.refused(InvalidTransitionError, command)

    # -- invariants ------------------------------------------------------------

    @invariant()
    def status_is_a_known_one_and_matches_the_model(self) -> None:
        assert self.run.status in STATUSES
        assert self.run.status == self.status
        assert self.run.attempt == self.attempt
        assert self.run.cancel_requested == self.cancel_requested
        assert self.run.is_finished == (not self.active)

    @invariant()
    def nothing_is_recorded_after_a_terminal_state(self) -> None:
        if self.recorded_when_finished is not None:
            assert self.status in TERMINAL | {FAILED}
            assert len(self.events) == self.recorded_when_finished

    @invariant()
    def versions_are_contiguous_from_one(self) -> None:
        versions = [e.originator_version for e in self.events]
        assert versions == list(range(1, len(versions) + 1))
        assert self.run.version == len(versions)

    @invariant()
    def each_attempt_starts_at_most_once(self) -> None:
        started = [e.attempt for e in self.events if type(e).__name__ == "RunStarted"]
        assert len(started) == len(set(started))

    @invariant()
    def a_retry_follows_a_failure_only_while_retries_remain(self) -> None:
        assert 1 <= self.run.attempt <= self.max_retries + 1
        events = self.events
        attempt = 1
        for previous, current in itertools.pairwise(events):
            if type(current).__name__ == "RunRetryScheduled":
                assert type(previous).__name__ == "RunFailed"
                assert current.attempt == attempt + 1 <= self.max_retries + 1
                attempt = current.attempt

    @invariant()
    def replaying_the_events_rebuilds_the_same_run(self) -> None:
        rebuilt = replay(self.events)
        assert rebuilt is not self.run
        assert (rebuilt.status, rebuilt.attempt, rebuilt.cancel_requested) == (
            self.run.status,
            self.run.attempt,
            self.run.cancel_requested,
        )
        assert (rebuilt.version, rebuilt.started_at, rebuilt.finished_at) == (
            self.run.version,
            self.run.started_at,
            self.run.finished_at,
        )


RunMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRunStateMachine = RunMachine.TestCase


def test_a_second_start_of_the_same_attempt_is_refused() -> None:
    run = submit_run()
    run.start(attempt=1, worker_id="w1", now=EPOCH)
    recorded = len(run.pending_events)
    with pytest.raises(InvalidTransitionError):
        run.start(attempt=1, worker_id="w2", now=EPOCH)
    assert len(run.pending_events) == recorded
    assert run.worker_id == "w1"


def test_a_run_with_no_retries_left_fails_for_good() -> None:
    run = submit_run(max_retries=1)
    for attempt in (1, 2):
        run.start(attempt=attempt, worker_id="w", now=EPOCH)
        run.fail(reason="exit_code", message="boom", exit_code=1, now=EPOCH, retry=RetryPolicy())
    assert (run.status, run.attempt) == (FAILED, 2)
    assert names(run.pending_events) == [
        "RunSubmitted",
        "RunStarted",
        "RunFailed",
        "RunRetryScheduled",
        "RunStarted",
        "RunFailed",
    ]
    with pytest.raises(InvalidTransitionError):
        run.log(text="late", stream="stdout", lines=1, now=EPOCH)


def test_a_failure_after_a_cancel_request_does_not_schedule_a_retry() -> None:
    run = submit_run(max_retries=3)
    run.start(attempt=1, worker_id="w", now=EPOCH)
    assert run.request_cancel(by="alice", now=EPOCH) is True
    run.fail(reason="worker_lost", message="gone", exit_code=None, now=EPOCH, retry=RetryPolicy())
    assert run.status != QUEUED
    assert "RunRetryScheduled" not in names(run.pending_events)
