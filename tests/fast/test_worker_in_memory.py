"""The worker's real attempt loop (`RunWorker.execute`) against in-memory commands, a scripted
executor that completes, fails or hangs on command, and in-memory leases.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from controlroom.commands.execution.reaper import LeaseTiming, Reaper
from controlroom.commands.execution.scrubbing import REDACTED
from controlroom.commands.execution.worker import RunWorker, recover
from controlroom.commands.ports import PlanError
from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.runs.retry import RetryPolicy
from controlroom.domain.runs.run import Run
from tests.fast.memory import (
    MemoryLeases,
    Planner,
    Queue,
    ScriptedExecutor,
    ScriptedJob,
    Tokens,
    in_thread,
    job,
    logged,
    names,
    of_type,
    run_commands,
    wait_for,
)

QUICK_LEASE = LeaseTiming(timeout_s=1.2, renew_s=0.1, margin_s=0.2, reap_grace_s=3.0)
"""Renewed every 0.1 s, certain for 1 s: a lost lease is noticed within a test's patience."""


@pytest.fixture
def commands() -> RunCommands:
    return run_commands(retry=RetryPolicy(base_delay_s=1.0))


@pytest.fixture
def leases() -> MemoryLeases:
    return MemoryLeases()


def worker(commands: RunCommands, executor: ScriptedExecutor, leases: MemoryLeases | None = None,
           planner: Planner | None = None, name: str = "worker-1") -> RunWorker:
    return RunWorker(commands, executor, planner or Planner(), worker_id=name,
                     base_url="http://controlroom.test", tokens=Tokens(), leases=leases,
                     lease_timing=QUICK_LEASE)


def submitted(commands: RunCommands, **overrides: Any) -> UUID:
    return commands.submit(job(**overrides)).run_id


def finished(commands: RunCommands, run_id: UUID) -> Run:
    return wait_for(lambda: (r := commands.load(run_id)).is_finished and r, what="the outcome")


@pytest.fixture
def hanging() -> Iterator[list[ScriptedJob]]:
    """Jobs a test left running: ended afterwards so that no worker thread outlives it."""
    jobs: list[ScriptedJob] = []
    yield jobs
    for j in jobs:
        j.kill()


def test_a_job_that_exits_0_completes_the_run_with_its_output_progress_and_lineage(
        commands: RunCommands, leases: MemoryLeases) -> None:
    executor = ScriptedExecutor(lambda j: j.say("reading", "::progress 50 half way",
                                                "::lineage raw.orders mart.orders", "done").exit(0))
    planner = Planner(lineage_on_success=[("raw.orders", "mart.daily")])
    run_id = submitted(commands)
    worker(commands, executor, leases, planner).execute(run_id, 1)
    run = commands.load(run_id)
    assert run.status == "completed"
    assert logged(commands, run_id) == "reading\ndone"
    (progress,) = of_type(commands, run_id, Run.RunProgressed)
    assert (progress.percent, progress.message) == (50.0, "half way")
    edges = [(e.source, e.target) for e in of_type(commands, run_id, Run.LineageEdgeRecorded)]
    assert edges == [("raw.orders", "mart.orders"), ("raw.orders", "mart.daily")]
    (completed,) = of_type(commands, run_id, Run.RunCompleted)
    assert completed.exit_code == 0
    (ran,) = executor.jobs
    assert ran.cleaned.is_set() and not ran.killed.is_set()
    assert leases.held == {}  # released once the outcome is in the log


def test_the_job_is_launched_with_its_files_its_secrets_and_its_run_identity(
        commands: RunCommands) -> None:
    executor = ScriptedExecutor(lambda j: j.exit(0))
    run_id = submitted(commands, secrets={"API_KEY": "k3y-value"}, timeout_s=42,
                       spec={"executor": "kubernetes", "network": "none"})
    planner = Planner()
    worker(commands, executor, planner=planner).execute(run_id, 1)
    (ran,) = executor.jobs
    assert ran.files == {"main.py": "print('hi')\n"}
    assert ran.env["API_KEY"] == "k3y-value"
    assert (ran.env["CONTROLROOM_RUN_ID"], ran.env["CONTROLROOM_ATTEMPT"]) == (str(run_id), "1")
    assert ran.env["CONTROLROOM_TOKEN"] == Tokens().for_run("tenant-a", run_id, 0, attempt=1)
    assert ran.attempt is not None
    assert (ran.attempt.timeout_s, ran.attempt.executor, ran.attempt.network) == (42, "kubernetes", "none")
    (ctx,) = planner.planned
    assert (ctx.secrets, ctx.job_name, ctx.attempt) == ({"API_KEY": "k3y-value"}, "nightly", 1)


def test_a_job_printing_its_secrets_or_its_token_leaves_only_redactions_in_the_log(
        commands: RunCommands) -> None:
    def leak(j: ScriptedJob) -> None:
        j.say(f"key={j.env['API_KEY']}", f"token={j.env['CONTROLROOM_TOKEN']}",
              "planned=extra-hidden", "::progress 10 with k3y-value").exit(0)

    run_id = submitted(commands, secrets={"API_KEY": "k3y-value"})
    worker(commands, ScriptedExecutor(leak), planner=Planner(redact=["extra-hidden"])).execute(run_id, 1)
    text = logged(commands, run_id)
    assert text == f"key={REDACTED}\ntoken={REDACTED}\nplanned={REDACTED}"
    (progress,) = of_type(commands, run_id, Run.RunProgressed)
    assert progress.message == f"with {REDACTED}"


def test_a_job_that_exits_non_zero_fails_with_its_stderr_tail_and_is_retried(
        commands: RunCommands) -> None:
    executor = ScriptedExecutor(lambda j: j.say("Traceback", "ValueError: bad row", stream="stderr").exit(3))
    run_id = submitted(commands, max_retries=1)
    worker(commands, executor).execute(run_id, 1)
    (failed,) = of_type(commands, run_id, Run.RunFailed)
    assert (failed.reason, failed.exit_code, failed.retrying) == ("exit_code", 3, True)
    assert failed.message == "Traceback\nValueError: bad row"
    run = commands.load(run_id)
    assert (run.status, run.attempt) == ("queued", 2)

    worker(commands, executor).execute(run_id, 2)
    run = commands.load(run_id)
    assert (run.status, run.attempt) == ("failed", 2)
    assert [e.retrying for e in of_type(commands, run_id, Run.RunFailed)] == [True, False]


def test_a_silent_failure_says_its_exit_code(commands: RunCommands) -> None:
    run_id = submitted(commands)
    worker(commands, ScriptedExecutor(lambda j: j.exit(137))).execute(run_id, 1)
    (failed,) = of_type(commands, run_id, Run.RunFailed)
    assert failed.message == "exited with code 137"


def test_a_failure_of_the_platform_is_recorded_with_its_own_reason_scrubbed(commands: RunCommands) -> None:
    def unschedulable(j: ScriptedJob) -> None:
        j.platform_failure = ("unschedulable", f"pod with {j.env['PW']} never scheduled")
        j.exit(1)

    run_id = submitted(commands, secrets={"PW": "pa55word"})
    worker(commands, ScriptedExecutor(unschedulable)).execute(run_id, 1)
    (failed,) = of_type(commands, run_id, Run.RunFailed)
    assert (failed.reason, failed.message) == ("unschedulable", f"pod with {REDACTED} never scheduled")


def test_a_job_that_cannot_be_planned_or_launched_fails_without_running(commands: RunCommands) -> None:
    planned_out = submitted(commands)
    refusing = Planner(refuse=PlanError("unsupported_spec", "no such engine"))
    worker(commands, ScriptedExecutor(), planner=refusing).execute(planned_out, 1)
    unlaunchable = submitted(commands)
    worker(commands, ScriptedExecutor(refuse=OSError("no space left"))).execute(unlaunchable, 1)
    (plan,) = of_type(commands, planned_out, Run.RunFailed)
    (launch,) = of_type(commands, unlaunchable, Run.RunFailed)
    assert (plan.reason, plan.message) == ("unsupported_spec", "no such engine")
    assert launch.reason == "launch_failed" and "no space left" in launch.message


def test_a_duplicate_delivery_of_a_started_attempt_runs_nothing(commands: RunCommands) -> None:
    executor = ScriptedExecutor(lambda j: j.exit(0))
    run_id = submitted(commands)
    worker(commands, executor).execute(run_id, 1)
    worker(commands, executor, name="worker-2").execute(run_id, 1)  # redelivered
    worker(commands, executor, name="worker-2").execute(run_id, 7)  # an attempt never scheduled
    assert len(executor.jobs) == 1
    assert names(commands, run_id).count("RunStarted") == 1


def test_a_hanging_job_is_stopped_on_a_cancel_request_and_the_run_cancelled(
        commands: RunCommands, leases: MemoryLeases, hanging: list[ScriptedJob]) -> None:
    executor = ScriptedExecutor()
    run_id = submitted(commands)
    thread = in_thread(worker(commands, executor, leases).execute, run_id, 1)
    j = executor.next_job()
    hanging.append(j)
    j.say("working")
    wait_for(lambda: logged(commands, run_id) == "working", what="the job's first line")
    commands.request_cancel("tenant-a", run_id, "bob")
    thread.join(10)
    assert j.killed.is_set() and not thread.is_alive()
    run = commands.load(run_id)
    assert run.status == "cancelled"
    assert of_type(commands, run_id, Run.RunCancelled)[0].reason == "cancelled on request"


def test_a_job_over_its_timeout_is_stopped_and_failed(commands: RunCommands,
                                                     hanging: list[ScriptedJob]) -> None:
    executor = ScriptedExecutor(hanging.append)
    run_id = submitted(commands, timeout_s=1)
    worker(commands, executor).execute(run_id, 1)
    (failed,) = of_type(commands, run_id, Run.RunFailed)
    assert (failed.reason, failed.message) == ("timeout", "exceeded timeout_s=1")
    assert executor.jobs[0].killed.is_set()


def test_a_stopping_worker_stops_its_job_and_fails_the_attempt_for_a_retry(
        commands: RunCommands, hanging: list[ScriptedJob]) -> None:
    executor = ScriptedExecutor()
    w = worker(commands, executor)
    run_id = submitted(commands, max_retries=1)
    thread = in_thread(w.execute, run_id, 1)
    hanging.append(executor.next_job())
    w.stopping.set()
    thread.join(10)
    (failed,) = of_type(commands, run_id, Run.RunFailed)
    assert (failed.reason, failed.retrying) == ("worker_shutdown", True)
    assert commands.load(run_id).status == "queued"


def test_a_run_finished_elsewhere_stops_its_job_and_records_nothing_more(
        commands: RunCommands, hanging: list[ScriptedJob]) -> None:
    executor = ScriptedExecutor()
    run_id = submitted(commands)
    thread = in_thread(worker(commands, executor).execute, run_id, 1)
    j = executor.next_job()
    hanging.append(j)
    commands.complete(run_id, summary="reported by an external runner", exit_code=0, attempt=1)
    thread.join(10)
    assert j.killed.is_set() and not thread.is_alive()
    assert names(commands, run_id)[-1] == "RunCompleted"
    assert len(of_type(commands, run_id, Run.RunCompleted)) == 1


def test_a_lost_lease_kills_the_job_and_leaves_the_outcome_to_the_reaper(
        commands: RunCommands, leases: MemoryLeases, hanging: list[ScriptedJob]) -> None:
    executor = ScriptedExecutor()
    run_id = submitted(commands, max_retries=1)
    thread = in_thread(worker(commands, executor, leases).execute, run_id, 1)
    j = executor.next_job()
    hanging.append(j)
    wait_for(lambda: (run_id, 1) in leases.held, what="the lease")
    leases.steal(run_id, 1)
    thread.join(10)
    assert j.killed.is_set() and not thread.is_alive()
    assert commands.load(run_id).status == "running"  # not this worker's to decide any more

    leases.held[(run_id, 1)] = ("elsewhere", 0.0)  # the new holder went silent too
    queue = Queue()
    reaper = Reaper(commands, leases, NoSweep(), queue, lease_timeout_s=QUICK_LEASE.timeout_s,
                    reap_grace_s=0.0)
    reaper.sweep_once()
    (failed,) = of_type(commands, run_id, Run.RunFailed)
    assert (failed.reason, failed.retrying) == ("worker_lost", True)
    assert commands.load(run_id).attempt == 2


def test_a_lease_held_elsewhere_keeps_the_won_attempt_from_running(
        commands: RunCommands, leases: MemoryLeases) -> None:
    executor = ScriptedExecutor(lambda j: j.exit(0))
    run_id = submitted(commands)
    leases.steal(run_id, 1)
    worker(commands, executor, leases).execute(run_id, 1)
    assert executor.jobs == []
    assert commands.load(run_id).status == "running"  # the reaper's to fail (no lease of ours)


class NoSweep:
    def running_without_lease(self, started_before_s: float, limit: int) -> list[UUID]:
        return []

    def queued_and_due(self, due_for_s: float, limit: int) -> list[tuple[UUID, int]]:
        return []


def test_after_a_restart_queued_runs_are_sent_again_and_orphaned_running_ones_failed(
        commands: RunCommands) -> None:
    queued = submitted(commands)
    orphan = submitted(commands, max_retries=1)
    commands.start(orphan, 1, "worker-that-died")
    done = submitted(commands)
    commands.start(done, 1, "w")
    commands.complete(done, summary="", exit_code=0, attempt=1)
    queue = Queue()
    recover(commands, queue, [queued, orphan, done], orphaned_running=True)
    (failed,) = of_type(commands, orphan, Run.RunFailed)
    assert failed.reason == "worker_lost"
    retry = commands.load(orphan)
    assert queue.sent == [(queued, 1, None)]  # the retry's message is the dispatcher's to send
    assert (retry.status, retry.attempt) == ("queued", 2)
    assert commands.load(done).status == "completed"
