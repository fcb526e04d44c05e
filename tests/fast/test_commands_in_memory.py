"""`RunCommands` on an in-memory event store: every command a run goes through, as the API and
the worker call them, with the real `ControlRoom` application (snapshots, optional run cache).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from cryptography.exceptions import InvalidTag

from controlroom.commands.append_limits import APPEND_TARGET_BYTES, EVENT_OVERHEAD_BYTES, LOG_CHUNK_BYTES
from controlroom.commands.application import SNAPSHOT_EVERY
from controlroom.commands.errors import ConcurrencyError, IdempotencyConflictError, RunNotFoundError
from controlroom.commands.execution.scrubbing import REDACTED
from controlroom.commands.messages import Artifact, Lineage, Log, Progress
from controlroom.commands.runs.handlers import RunCommands, idempotent_run_id
from controlroom.commands.updates import MAX_CONFLICT_RETRIES
from controlroom.domain.errors import AttemptMismatchError, InvalidTransitionError
from controlroom.domain.runs.retry import RetryPolicy
from controlroom.domain.runs.run import Run
from tests.fast.memory import (
    CACHED,
    POPO,
    Clock,
    control_room,
    events,
    job,
    logged,
    names,
    of_type,
    run_commands,
    stored_bytes,
)


@pytest.fixture(params=[POPO, CACHED], ids=["log", "run-cache"])
def commands(request: pytest.FixtureRequest) -> Iterator[RunCommands]:
    """The handlers reading each run from the log, and as a process with a run cache does."""
    app = control_room(request.param)
    yield run_commands(app, retry=RetryPolicy(base_delay_s=2.0, max_delay_s=300.0))
    app.close()


def running(commands: RunCommands, **overrides: Any) -> Any:
    run_id = commands.submit(job(**overrides)).run_id
    commands.start(run_id, 1, "worker-1")
    return run_id


# -- the lifecycle ----------------------------------------------------------------


def test_a_submitted_run_is_queued_at_attempt_one_and_its_answer_names_its_position(
        commands: RunCommands) -> None:
    answer = commands.submit(job())
    run = commands.load(answer.run_id)
    assert answer.created and (run.status, run.attempt) == ("queued", 1)
    assert answer.position == commands.app.recorder.max_notification_id()
    assert answer.submitted_at == commands.clock()


def test_a_run_goes_from_start_through_output_to_completed(commands: RunCommands) -> None:
    run_id = running(commands)
    commands.log(run_id, [("stdout", "hello", 1)], 1)
    commands.progress(run_id, 50.0, "half way", 1)
    commands.lineage(run_id, [("raw.orders", "mart.orders")], 1)
    position = commands.complete(run_id, summary="done", exit_code=0, attempt=1)
    assert names(commands, run_id) == ["RunSubmitted", "RunStarted", "RunLogged", "RunProgressed",
                                       "LineageEdgeRecorded", "RunCompleted"]
    assert commands.load(run_id).status == "completed"
    assert position == commands.app.recorder.max_notification_id()


def test_nothing_is_recorded_on_a_finished_run(commands: RunCommands) -> None:
    run_id = running(commands)
    commands.complete(run_id, summary="done", exit_code=0, attempt=1)
    before = names(commands, run_id)
    for late in (lambda: commands.log(run_id, [("stdout", "late", 1)], 1),
                 lambda: commands.fail(run_id, reason="x", message="late", exit_code=1, attempt=1),
                 lambda: commands.request_cancel("tenant-a", run_id, "bob")):
        with pytest.raises(InvalidTransitionError):
            late()
    assert names(commands, run_id) == before


def test_a_failure_without_retries_left_fails_the_run_for_good(commands: RunCommands) -> None:
    run_id = running(commands)
    commands.fail(run_id, reason="exit_code", message="boom", exit_code=2, attempt=1)
    run = commands.load(run_id)
    assert (run.status, run.attempt) == ("failed", 1)
    (failed,) = of_type(commands, run_id, Run.RunFailed)
    assert (failed.retrying, failed.reason, failed.exit_code) == (False, "exit_code", 2)


def test_failed_attempts_are_retried_on_a_doubling_schedule_until_none_are_left(
        commands: RunCommands) -> None:
    clock = commands.clock
    assert isinstance(clock, Clock)
    run_id = commands.submit(job(max_retries=3)).run_id
    waits = []
    for attempt in (1, 2, 3):
        commands.start(run_id, attempt, "worker-1")
        commands.fail(run_id, reason="exit_code", message="boom", exit_code=1, attempt=attempt)
        run = commands.load(run_id)
        assert (run.status, run.attempt) == ("queued", attempt + 1)
        waits.append(run.not_before - clock.now)
        clock.advance(600)
    assert waits == [timedelta(seconds=2), timedelta(seconds=4), timedelta(seconds=8)]
    commands.start(run_id, 4, "worker-1")
    commands.fail(run_id, reason="exit_code", message="boom", exit_code=1, attempt=4)
    assert commands.load(run_id).status == "failed"
    assert [e.retrying for e in of_type(commands, run_id, Run.RunFailed)] == [True, True, True, False]


def test_the_retry_wait_is_capped() -> None:
    commands = run_commands(retry=RetryPolicy(base_delay_s=100.0, max_delay_s=150.0))
    run_id = commands.submit(job(max_retries=2)).run_id
    for attempt in (1, 2):
        commands.start(run_id, attempt, "w")
        commands.fail(run_id, reason="exit_code", message="", exit_code=1, attempt=attempt)
    delays = [(e.not_before - e.at).total_seconds()
              for e in of_type(commands, run_id, Run.RunRetryScheduled)]
    assert delays == [100.0, 150.0]


def test_a_queued_run_is_cancelled_at_once_and_a_running_one_when_its_worker_confirms(
        commands: RunCommands) -> None:
    queued = commands.submit(job()).run_id
    commands.request_cancel("tenant-a", queued, "bob")
    assert commands.load(queued).status == "cancelled"

    run_id = running(commands)
    commands.request_cancel("tenant-a", run_id, "bob")
    run = commands.load(run_id)
    assert (run.status, run.cancel_requested) == ("running", True)
    commands.confirm_cancelled(run_id, "cancelled on request", 1)
    assert commands.load(run_id).status == "cancelled"


def test_a_failure_after_a_cancel_request_is_not_retried(commands: RunCommands) -> None:
    run_id = running(commands, max_retries=5)
    commands.request_cancel("tenant-a", run_id, "bob")
    commands.fail(run_id, reason="exit_code", message="killed", exit_code=-15, attempt=1)
    assert commands.load(run_id).status == "failed"


def test_another_tenants_run_is_not_found(commands: RunCommands) -> None:
    run_id = commands.submit(job()).run_id
    with pytest.raises(RunNotFoundError):
        commands.request_cancel("tenant-b", run_id, "mallory")
    with pytest.raises(RunNotFoundError):
        commands.record("tenant-b", run_id, [Log(text="x")])
    with pytest.raises(RunNotFoundError):
        commands.load(uuid4())
    assert names(commands, run_id) == ["RunSubmitted"]


# -- idempotency ------------------------------------------------------------------


def test_a_repeated_idempotency_key_answers_with_the_first_run(commands: RunCommands) -> None:
    first = commands.submit(job(idempotency_key="key-1"))
    commands.start(first.run_id, 1, "w")  # the log moved on since: the answer still holds
    again = commands.submit(job(idempotency_key="key-1"))
    assert first.created and not again.created
    assert again.run_id == first.run_id == idempotent_run_id("tenant-a", "key-1")
    assert again.submitted_at == first.submitted_at
    assert again.position >= first.position
    assert names(commands, first.run_id) == ["RunSubmitted", "RunStarted"]


def test_an_idempotency_key_reused_for_another_request_is_refused(commands: RunCommands) -> None:
    first = commands.submit(job(idempotency_key="key-1"))
    with pytest.raises(IdempotencyConflictError) as refused:
        commands.submit(job(idempotency_key="key-1", request_hash="another-body"))
    assert refused.value.run_id == str(first.run_id)


def test_the_same_idempotency_key_of_two_tenants_makes_two_runs(commands: RunCommands) -> None:
    a = commands.submit(job(idempotency_key="key-1"))
    b = commands.submit(job(idempotency_key="key-1", tenant_id="tenant-b"))
    assert a.created and b.created and a.run_id != b.run_id


def test_runs_without_a_key_are_always_new(commands: RunCommands) -> None:
    assert len({commands.submit(job()).run_id for _ in range(3)}) == 3


# -- attempt fencing ----------------------------------------------------------------


def test_a_superseded_attempts_writes_are_refused_and_change_nothing(commands: RunCommands) -> None:
    run_id = running(commands, max_retries=1)
    commands.fail(run_id, reason="worker_lost", message="lease lapsed", exit_code=None, attempt=1)
    commands.start(run_id, 2, "worker-2")
    before = names(commands, run_id)
    stale = [
        lambda: commands.log(run_id, [("stdout", "from attempt 1", 1)], 1),
        lambda: commands.progress(run_id, 10.0, "", 1),
        lambda: commands.lineage(run_id, [("a.b", "c.d")], 1),
        lambda: commands.add_artifacts(run_id, [{"artifact_id": "x", "path": "p"}], 1),
        lambda: commands.complete(run_id, summary="", exit_code=0, attempt=1),
        lambda: commands.fail(run_id, reason="x", message="", exit_code=1, attempt=1),
        lambda: commands.record("tenant-a", run_id, [Log(text="reported late")], attempt=1),
    ]
    for write in stale:
        with pytest.raises(AttemptMismatchError):
            write()
    assert names(commands, run_id) == before
    commands.log(run_id, [("stdout", "from attempt 2", 1)], 2)
    assert logged(commands, run_id) == "from attempt 2"


def test_an_attempt_is_started_once_and_only_the_current_one(commands: RunCommands) -> None:
    run_id = running(commands)
    with pytest.raises(InvalidTransitionError):
        commands.start(run_id, 1, "worker-2")
    queued = commands.submit(job()).run_id
    with pytest.raises(AttemptMismatchError):
        commands.start(queued, 2, "worker-2")
    assert names(commands, run_id) == ["RunSubmitted", "RunStarted"]
    assert names(commands, queued) == ["RunSubmitted"]


def test_a_numbered_write_repeated_by_its_worker_is_recorded_once(commands: RunCommands) -> None:
    run_id = running(commands)
    for _ in range(2):
        commands.log(run_id, [("stdout", "once", 1)], 1, seq=1)
        commands.progress(run_id, 20.0, "once", 1, seq=2)
        commands.complete(run_id, summary="ok", exit_code=0, attempt=1, seq=3)
    assert names(commands, run_id) == ["RunSubmitted", "RunStarted", "RunLogged", "RunProgressed",
                                       "RunCompleted"]


# -- secrets ------------------------------------------------------------------------


def test_secrets_are_stored_sealed_and_unsealed_only_for_the_run(commands: RunCommands) -> None:
    secret = "hunter2-very-secret"
    run_id = commands.submit(job(secrets={"DB_PASSWORD": secret})).run_id
    run = commands.load(run_id)
    assert run.sealed_secrets and secret not in run.sealed_secrets
    stored = stored_bytes(commands.app)
    assert secret.encode() not in stored
    assert base64.b64encode(secret.encode()) not in stored
    assert commands.unseal_secrets(run) == {"DB_PASSWORD": secret}
    assert commands.unseal_secrets(commands.load(commands.submit(job()).run_id)) == {}


def test_another_servers_key_cannot_unseal_a_runs_secrets() -> None:
    app = control_room()
    ours = run_commands(app, key="ours")
    run_id = ours.submit(job(secrets={"TOKEN": "s3cr3t-value"})).run_id
    with pytest.raises(InvalidTag):
        run_commands(app, key="theirs").unseal_secrets(ours.load(run_id))


def test_reported_output_is_scrubbed_of_the_runs_secrets_and_of_what_the_caller_redacts(
        commands: RunCommands) -> None:
    secret = "hunter2-very-secret"
    run_id = running(commands, secrets={"DB_PASSWORD": secret})
    commands.record("tenant-a", run_id, [
        Log(text=f"connecting with {secret}"),
        Log(text="b64: " + base64.b64encode(secret.encode()).decode()),
        Progress(percent=10.0, message=f"using {secret[::-1]}"),
        Log(text="the run token is tok-abcdef"),
    ], attempt=1, redact=["tok-abcdef"])
    text = logged(commands, run_id)
    (progress,) = of_type(commands, run_id, Run.RunProgressed)
    assert secret not in text and "tok-abcdef" not in text
    assert secret[::-1] not in progress.message
    assert text.count(REDACTED) == 3 and REDACTED in progress.message
    assert secret.encode() not in stored_bytes(commands.app)


# -- reported events and the size of appends -----------------------------------------------


def test_reported_events_are_recorded_in_order_with_the_reporters_time(commands: RunCommands) -> None:
    run_id = running(commands)
    clock = commands.clock
    reported = clock() - timedelta(minutes=5)
    answer = commands.record("tenant-a", run_id, [
        Progress(percent=5.0, message="warming up", timestamp=reported),
        Lineage(source="raw.orders", target="mart.orders"),
        Artifact(path="out/report.html", url="https://cdn.example.com/r.html", size=10),
        Log(text="hello"),
    ])
    assert names(commands, run_id)[2:] == ["RunProgressed", "LineageEdgeRecorded", "ArtifactAdded",
                                           "RunLogged"]
    (progress,) = of_type(commands, run_id, Run.RunProgressed)
    assert (progress.reported_at, progress.at) == (reported, clock())
    (artifact,) = of_type(commands, run_id, Run.ArtifactAdded)
    assert artifact.artifact["external"] and artifact.artifact["url"] == "https://cdn.example.com/r.html"
    assert (answer.version, answer.status) == (commands.load(run_id).version, "running")
    assert answer.position == commands.app.recorder.max_notification_id()


class AppendSpy:
    """Wraps the recorder's insert: the size of each append (one transaction under the lock)."""

    def __init__(self, commands: RunCommands) -> None:
        self.appends: list[int] = []
        recorder = commands.app.recorder
        insert = recorder.insert_events

        def spy(stored_events: list[Any], **kwargs: Any) -> Any:
            self.appends.append(sum(len(e.state) for e in stored_events))
            return insert(stored_events, **kwargs)

        recorder.insert_events = spy  # type: ignore[method-assign]


def test_a_large_log_is_cut_into_chunks_and_recorded_in_appends_of_bounded_size(
        commands: RunCommands) -> None:
    run_id = running(commands)
    text = "\n".join(f"{i:06d} " + "x" * 993 for i in range(1000))  # ~1 MB of 1000-byte lines
    spy = AppendSpy(commands)
    commands.record("tenant-a", run_id, [Log(text=text)])
    chunks = of_type(commands, run_id, Run.RunLogged)
    assert all(len(c.text.encode()) <= LOG_CHUNK_BYTES for c in chunks)
    assert "\n".join(c.text for c in chunks) == text
    assert sum(c.lines for c in chunks) == 1000
    assert len(spy.appends) > 1
    assert max(spy.appends) <= APPEND_TARGET_BYTES + LOG_CHUNK_BYTES + EVENT_OVERHEAD_BYTES


def test_the_workers_large_output_is_recorded_in_bounded_appends_too(commands: RunCommands) -> None:
    run_id = running(commands)
    line = "y" * 1000
    spy = AppendSpy(commands)
    commands.log(run_id, [("stdout", "\n".join([line] * 600), 600), ("stderr", "oops", 1)], 1)
    assert logged(commands, run_id).split("\n") == [line] * 600 + ["oops"]
    assert len(spy.appends) > 1 and max(spy.appends) <= 2 * APPEND_TARGET_BYTES


def test_a_single_line_longer_than_a_chunk_is_cut_at_character_boundaries(commands: RunCommands) -> None:
    run_id = running(commands)
    line = "é" * LOG_CHUNK_BYTES  # two bytes each: no cut may split one
    commands.record("tenant-a", run_id, [Log(text=line)])
    chunks = [c.text for c in of_type(commands, run_id, Run.RunLogged)]
    assert len(chunks) == 2 and "".join(chunks) == line


# -- two deciders on one run -------------------------------------------------------------


def once(action: Callable[[], object]) -> Callable[[], None]:
    """`action` on the first call only (the clock is read again on every retry)."""
    done: list[bool] = []

    def first() -> None:
        if not done:
            done.append(True)
            action()

    return first


def test_a_command_that_loses_a_race_decides_again_on_the_winners_state() -> None:
    clock = Clock()
    app = control_room()
    ours, theirs = run_commands(app, clock=clock), run_commands(app)
    run_id = ours.submit(job()).run_id
    ours.start(run_id, 1, "worker-1")
    clock.on_read = once(lambda: theirs.progress(run_id, 30.0, "theirs", 1))  # after our load
    ours.progress(run_id, 60.0, "ours", 1)
    assert [e.message for e in of_type(ours, run_id, Run.RunProgressed)] == ["theirs", "ours"]
    assert [e.originator_version for e in events(ours, run_id)] == [1, 2, 3, 4]


def test_of_two_workers_starting_one_attempt_exactly_one_wins() -> None:
    clock = Clock()
    app = control_room()
    ours, theirs = run_commands(app, clock=clock), run_commands(app)
    run_id = ours.submit(job()).run_id
    clock.on_read = once(lambda: theirs.start(run_id, 1, "worker-2"))
    with pytest.raises(InvalidTransitionError):
        ours.start(run_id, 1, "worker-1")
    (started,) = of_type(ours, run_id, Run.RunStarted)
    assert started.worker_id == "worker-2"


def test_a_run_changing_under_every_try_gives_up_with_a_concurrency_error() -> None:
    clock = Clock()
    app = control_room()
    ours, theirs = run_commands(app, clock=clock), run_commands(app)
    run_id = ours.submit(job()).run_id
    ours.start(run_id, 1, "worker-1")
    tries = []

    def always_first() -> None:
        tries.append(1)
        theirs.log(run_id, [("stdout", "theirs", 1)], 1)

    clock.on_read = always_first
    with pytest.raises(ConcurrencyError):
        ours.progress(run_id, 1.0, "ours", 1)
    clock.on_read = None
    assert len(tries) == MAX_CONFLICT_RETRIES
    assert of_type(ours, run_id, Run.RunProgressed) == []


def test_a_reported_batch_that_loses_a_race_keeps_every_event_once_in_order() -> None:
    clock = Clock()
    app = control_room()
    ours, theirs = run_commands(app, clock=clock), run_commands(app)
    run_id = ours.submit(job()).run_id
    ours.start(run_id, 1, "worker-1")
    clock.on_read = once(lambda: theirs.log(run_id, [("stdout", "theirs", 1)], 1))
    ours.record("tenant-a", run_id, [Log(text="a"), Log(text="b")])
    assert logged(ours, run_id) == "theirs\na\nb"


# -- long runs reload from snapshots --------------------------------------------------------


def test_a_long_run_reloads_from_its_snapshot_to_the_same_state(commands: RunCommands) -> None:
    run_id = running(commands, max_retries=1)
    for i in range(2 * SNAPSHOT_EVERY + 5):
        commands.log(run_id, [("stdout", f"line {i}", 1)], 1, seq=i + 1)
    commands.fail(run_id, reason="exit_code", message="", exit_code=1, attempt=1)
    assert commands.app.snapshots is not None
    snapshots = list(commands.app.snapshots.get(run_id))
    assert [s.originator_version for s in snapshots] == [SNAPSHOT_EVERY, 2 * SNAPSHOT_EVERY]
    loaded = commands.load(run_id)
    replayed = functools.reduce(lambda run, e: e.mutate(run), events(commands, run_id), None)
    for run in (loaded, replayed):
        assert (run.status, run.attempt, run.version) == ("queued", 2, 2 * SNAPSHOT_EVERY + 9)
        assert (run.recorded_seq(1), run.recorded_seq(2)) == (2 * SNAPSHOT_EVERY + 5, 0)
