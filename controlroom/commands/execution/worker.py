"""Executes one run attempt: claim it, launch the job, record its output and outcome."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol
from uuid import UUID

from controlroom.commands.append_limits import APPEND_TARGET_BYTES
from controlroom.commands.errors import RunNotFoundError
from controlroom.commands.execution.outputs import store_outputs
from controlroom.commands.execution.reaper import (
    DEFAULT_LEASE_TIMEOUT_S,
    LeaseKeeper,
    LeaseStore,
    LeaseTiming,
)
from controlroom.commands.execution.scrubbing import REDACTED as REDACTED
from controlroom.commands.execution.scrubbing import Scrubber
from controlroom.commands.execution.spooled import (
    ArtifactsRecord,
    LineageRecord,
    LogRecord,
    OutcomeRecord,
    ProgressRecord,
    Record,
    SpoolsPort,
)
from controlroom.commands.execution.writes import Outbox, SpoolFlusher
from controlroom.commands.ports import (
    ArtifactStore,
    Attempt,
    Execution,
    Executor,
    JobContext,
    JobPlanner,
    PlanError,
    RunQueue,
    TokenMinter,
)
from controlroom.commands.retrying import Backoff, is_unavailable
from controlroom.commands.runs.archive import archive_code
from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.errors import DomainError
from controlroom.domain.runs.run import Run
from controlroom.domain.runs.status import RunStatus
from controlroom.services import Health, HealthMark

log = logging.getLogger("controlroom.worker")

FLUSH_INTERVAL_S = 0.5
MAX_CHUNK_LINES = 500
STDERR_TAIL_LINES = 20
MAX_ERROR_CHARS = 4000
PROGRESS_LINE = re.compile(r"^::progress\s+(\d+(?:\.\d+)?)\s*(.*)$")
LINEAGE_LINE = re.compile(r"^::lineage\s+(\S+)\s+(\S+)\s*$")
RUN_TOKEN_MARGIN_S = 300
"""A run token outlives the run's timeout by this much (flushing, artifacts, clock skew)."""
STOP_FLUSH_GRACE_S = 3.0
"""A stopping worker waits this long for an attempt's outcome to be recorded, then leaves it in
the spool for the next worker on its data dir."""
COLLECT_OUTPUTS_ON_FAILURE = {"exit_code", "timeout"}
"""Failed attempts whose outputs are kept too (useful for diagnosis); not cancels or shutdowns."""


class RunWorker:
    """Thin and idempotent: a duplicate delivery finds the attempt taken and does nothing."""

    def __init__(
        self, commands: RunCommands, executor: Executor, planner: JobPlanner, *,
        worker_id: str, base_url: str, tokens: TokenMinter | None = None,
        artifacts: ArtifactStore | None = None,
        leases: LeaseStore | None = None, lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
        lease_timing: LeaseTiming | None = None, spools: SpoolsPort | None = None,
    ) -> None:
        self.leases = leases
        self.spools = spools
        self.lease_timing = (lease_timing or LeaseTiming.of(lease_timeout_s)).check()
        self.commands = commands
        self.executor = executor
        self.planner = planner
        self.worker_id = worker_id
        self.base_url = base_url
        self.tokens = tokens
        self.artifacts = artifacts
        self.stopping = threading.Event()

    def spool_flusher(self) -> SpoolFlusher | None:
        """The service delivering the spools left in this worker's data dir (by a worker that
        crashed or stopped mid-outage): to start before `recover` may fail the runs a crash
        left running. None without spools."""
        if self.spools is None:
            return None
        return SpoolFlusher(self.commands, self.spools, self.artifacts)

    def execute(self, run_id: UUID, attempt: int) -> None:
        """Run `attempt` of `run_id` to an outcome, unless someone else has it."""
        try:
            self.commands.start(run_id, attempt, self.worker_id)
        except (DomainError, RunNotFoundError) as e:
            log.info("skipping run %s attempt %s: %s", run_id, attempt, e)
            return
        lease = LeaseKeeper(self.leases, run_id, attempt, self.worker_id, self.lease_timing)
        if not self._take(lease, run_id, attempt):
            return
        try:
            self._execute(run_id, attempt, lease)
        finally:
            lease.release()

    def _take(self, lease: LeaseKeeper, run_id: UUID, attempt: int) -> bool:
        """Take the attempt's lease, waiting out a database that is away (just back, its pools
        still reconnecting) for as long as the reaper would leave the attempt alone."""
        backoff, give_up = Backoff(), time.monotonic() + self.lease_timing.timeout_s
        while True:
            try:
                if lease.take():
                    return True
                # Can't happen to a start's winner; the reaper fails the attempt.
                log.error("run %s attempt %s: its lease is held elsewhere; not running it",
                          run_id, attempt)
                return False
            except Exception as e:
                if not is_unavailable(e) or time.monotonic() >= give_up or self.stopping.is_set():
                    raise
                log.warning("run %s attempt %s: taking its lease: %s; trying again", run_id,
                            attempt, e)
                self.stopping.wait(backoff.next())

    def _execute(self, run_id: UUID, attempt: int, lease: LeaseKeeper) -> None:
        run = self.commands.load(run_id)
        if self.artifacts is not None:
            archive_code(self.commands, self.artifacts, run)
        secrets = self.commands.unseal_secrets(run)
        files = {f["path"]: f["content"] for f in run.code.get("files", [])}
        ctx = JobContext(
            run_id=run_id, attempt=attempt, tenant_id=run.tenant_id, job_type=run.job_type,
            job_name=run.job_name, files=files, spec=run.spec, secrets=secrets,
        )
        env = {
            **secrets,
            "CONTROLROOM_URL": self.base_url,
            "CONTROLROOM_RUN_ID": str(run_id),
            "CONTROLROOM_ATTEMPT": str(attempt),
        }
        if self.tokens is not None:
            env["CONTROLROOM_TOKEN"] = self.tokens.for_run(
                run.tenant_id, run_id, run.timeout_s + RUN_TOKEN_MARGIN_S, attempt=attempt
            )
        try:
            plan = self.planner.plan(ctx)
            where = Attempt(run_id, attempt, timeout_s=run.timeout_s,
                            executor=_spec_str(run.spec, "executor"),
                            network=_spec_str(run.spec, "network"))
            execution = self.executor.launch(files=files, launch=plan, env=env, attempt=where)
        except PlanError as e:
            self.commands.fail(run_id, reason=e.reason, message=e.message, exit_code=None,
                               attempt=attempt)
            return
        except (OSError, ValueError) as e:  # files it can't lay out, an unusable env value
            self.commands.fail(run_id, reason="launch_failed", exit_code=None, attempt=attempt,
                               message=f"could not start the job: {e}")
            return
        scrub = Scrubber([*secrets.values(), *plan.redact, env.get("CONTROLROOM_TOKEN", "")])
        outbox = Outbox(self.commands, run_id, attempt, spools=self.spools,
                        artifacts=self.artifacts)
        try:
            _Supervision(self, run, execution, scrub, plan.lineage_on_success, lease,
                         outbox).run()
        finally:
            execution.cleanup()


class RunSource(Protocol):
    """Where a JobWorker takes runs from: the in-process queue, or the broker."""

    def stop_taking(self) -> None:
        """Take no more runs, without waiting (one taken in that instant is handed back)."""
        ...

    def stop(self) -> None:
        """Wait, briefly, for the runs being executed to end."""
        ...


class JobWorker:
    """The service executing runs in this process: `begin()` starts taking them from `source`
    (each executed by `worker`); a stop takes no more and ends running jobs (their attempts
    fail as `worker_shutdown`, or wait in the spool for the next worker on this data dir)."""

    name = "job_worker"

    def __init__(self, worker: RunWorker, source: RunSource, begin: Callable[[], None]) -> None:
        self.worker, self.source, self.begin = worker, source, begin
        self._mark = HealthMark(self.name)

    def start(self) -> JobWorker:
        self.begin()
        self._mark.set("running")
        return self

    def request_stop(self) -> None:
        self.source.stop_taking()
        self.worker.stopping.set()  # running jobs end

    def stop(self, timeout: float | None = None) -> None:
        self.request_stop()
        self.source.stop()
        self._mark.set("stopped")

    def health(self) -> Health:
        return self._mark.get()


class _Supervision:
    """Pumps one execution's output into the log and watches for cancel and timeout.

    Everything it records goes through the attempt's Outbox: straight to the log while the
    database answers, into the attempt's spool on the worker's disk while it does not (the
    job keeps running as long as the lease is certainly ours), and from there, in order and
    exactly once, when it answers again. Once the lease is not certainly ours while the job
    runs, the lease's watchdog kills the job and its outcome is the reaper's to record.
    """

    def __init__(
        self, worker: RunWorker, run: Run, execution: Execution, scrub: Scrubber,
        lineage_on_success: list[tuple[str, str]], lease: LeaseKeeper | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.lease = lease
        self.lineage_on_success = lineage_on_success
        self.commands = worker.commands
        self.artifacts = worker.artifacts
        self.stopping = worker.stopping
        self.run_id: UUID = run.id
        self.attempt: int = run.attempt
        self.execution = execution
        self.scrub = scrub
        self.outbox = outbox or Outbox(worker.commands, run.id, run.attempt,
                                       artifacts=worker.artifacts)
        self.deadline = time.monotonic() + run.timeout_s
        self.timeout_s = run.timeout_s
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def run(self) -> None:
        exited = getattr(self.execution, "exited", None)  # executors that can tell cheaply
        guard: AbstractContextManager[object] = (
            self.lease.guard(self.execution.kill, exited) if self.lease is not None
            else nullcontext())
        try:
            with guard:
                self._supervise()
        except (DomainError, RunNotFoundError) as e:
            # The run was finished elsewhere (e.g. an external runner reported it) while this
            # worker recorded output or the outcome: the log refuses more, the job must stop.
            log.info("run %s ended elsewhere (%s); stopping its process", self.run_id, e)
            self.execution.kill()
            self.outbox.discard()
        except _Fenced:
            log.warning("run %s attempt %s: lease lost; the job is stopped, its outcome is "
                        "the reaper's", self.run_id, self.attempt)
            self.execution.kill()
        finally:
            self.outbox.close()  # what still waits is delivered by the worker's SpoolFlusher

    def _held(self) -> bool:
        return self.lease is None or self.lease.held()

    def _supervise(self) -> None:
        while (code := self._pump()) is None:
            if not self._held():
                raise _Fenced  # the reaper may hand the run on: stop the job
            run = self.outbox.run  # read back by the outbox's courier, never waited for here
            if run is not None and (run.is_finished or run.attempt != self.attempt):
                # Ended elsewhere — an external runner reported its outcome (POST
                # /webhooks/continue): stop the job now, as a cancel does, and record nothing
                # more; a silent job would otherwise hold its slot until it exits.
                log.info("run %s attempt %s is %s elsewhere; stopping the job",
                         self.run_id, self.attempt, run.status)
                self.execution.kill()
                self.outbox.discard()
                return
            if run is not None and run.cancel_requested:
                self._stop()
                self._finish(OutcomeRecord(self.outbox.number(2), RunStatus.CANCELLED.value,
                                           reason="cancelled on request"))
                return
            if time.monotonic() > self.deadline:
                self._stop()
                self._fail("timeout", f"exceeded timeout_s={self.timeout_s}", None)
                return
            if self.stopping.is_set():
                self._stop()
                self._fail("worker_shutdown", "the worker shut down mid-run", None)
                return
        self._ended()
        if code == 0:
            self._collect_outputs()
            if self.lineage_on_success:
                self.outbox.put([LineageRecord(self.outbox.number(), time.time(),
                                               list(self.lineage_on_success))])
            self._finish(OutcomeRecord(self.outbox.number(2), RunStatus.COMPLETED.value,
                                       summary="exited with code 0", exit_code=0))
        elif (failure := self.execution.failure()) is not None:
            self._fail(failure[0], self.scrub(failure[1])[-MAX_ERROR_CHARS:], None)
        else:
            tail = "\n".join(self.stderr_tail)[-MAX_ERROR_CHARS:]
            self._fail("exit_code", tail or f"exited with code {code}", code)

    def _stop(self) -> None:
        """Stop the job on the worker's own account (cancel, timeout, shutdown)."""
        self.execution.kill()
        self._pump_rest()
        self._ended()

    def _ended(self) -> None:
        """The job's process is over: its outcome is ours to record, not the reaper's —
        unless the lease was lost first (the watchdog's kill is not the job's outcome)."""
        if self.lease is not None and not self.lease.end_job():
            raise _Fenced

    def _fail(self, reason: str, message: str, exit_code: int | None) -> None:
        if reason in COLLECT_OUTPUTS_ON_FAILURE:
            self._collect_outputs()
        self._finish(OutcomeRecord(self.outbox.number(2), RunStatus.FAILED.value, reason=reason,
                                   message=message, exit_code=exit_code))

    def _finish(self, outcome: OutcomeRecord) -> None:
        """Record the outcome after everything before it; while the database is away, wait for
        it (the lease is renewed meanwhile) unless the worker is stopping, when the spool is
        left for the next worker on this data dir."""
        self.outbox.put([outcome])
        since = time.monotonic()

        def give_up() -> bool:  # a stopping worker still records what it can in a moment
            return self.stopping.is_set() and time.monotonic() - since > STOP_FLUSH_GRACE_S

        if not self.outbox.settle(give_up):
            log.warning("run %s attempt %s: the worker stops with the attempt's outcome not "
                        "yet recorded; it waits in the spool", self.run_id, self.attempt)

    def _collect_outputs(self) -> None:
        """Store the job's output files (no database needed), then record them."""
        if self.artifacts is None:
            return
        try:
            notes, artifacts = store_outputs(self.artifacts, self.execution, self.run_id,
                                             self.attempt)
        except Exception as e:  # the store's errors vary by backend; the outcome goes on
            log.warning("run %s: outputs not stored: %s", self.run_id, e)
            notes, artifacts = [f"outputs not stored: {e}"], []
        records: list[Record] = []
        if notes:
            records.append(LogRecord(self.outbox.number(), time.time(),
                                     [("system", "\n".join(notes), len(notes))]))
        if artifacts:
            records.append(ArtifactsRecord(self.outbox.number(), artifacts))
        self.outbox.put(records)

    def _pump(self) -> int | None:
        """Record one interval's output; the exit code once the job is done."""
        records: list[Record] = []
        chunks: list[tuple[str, list[str]]] = []
        count = size = 0  # a flush is bounded in lines and bytes (docs/limits.md)
        for stream, raw in self.execution.lines(timeout=FLUSH_INTERVAL_S):
            line = self.scrub(raw)
            if (m := PROGRESS_LINE.match(line)) is not None:
                self._chunk(records, chunks)
                chunks, count, size = [], 0, 0
                records.append(ProgressRecord(self.outbox.number(), time.time(),
                                              min(float(m[1]), 100.0), m[2]))
                continue
            if (m := LINEAGE_LINE.match(line)) is not None:
                self._chunk(records, chunks)
                chunks, count, size = [], 0, 0
                records.append(LineageRecord(self.outbox.number(), time.time(), [(m[1], m[2])]))
                continue
            if stream == "stderr":
                self.stderr_tail.append(line)
            if chunks and chunks[-1][0] == stream:
                chunks[-1][1].append(line)
            else:
                chunks.append((stream, [line]))
            count += 1
            size += len(line) + 1
            if count >= MAX_CHUNK_LINES or size >= APPEND_TARGET_BYTES:
                # More output is waiting: read it all before asking for the exit code (which
                # gives up on output still unread a short while after the process ended).
                self._chunk(records, chunks)
                self.outbox.put(records)
                return None
        self._chunk(records, chunks)
        # One put per interval: while the database is away, one fsync of the spool per interval.
        self.outbox.put(records)
        return self.execution.poll()

    def _pump_rest(self) -> None:
        while self._pump() is None:
            pass

    def _chunk(self, records: list[Record], chunks: list[tuple[str, list[str]]]) -> None:
        """The chunks read since the last record, as one log record (one append: bounded)."""
        if chunks:
            entries = [(stream, "\n".join(lines), len(lines)) for stream, lines in chunks]
            records.append(LogRecord(self.outbox.number(), time.time(), entries))


class _Fenced(Exception):
    """The lease is no longer certainly ours while the job runs: stop it; its outcome is the
    reaper's (output already spooled is still delivered while the attempt is open)."""


def _spec_str(spec: dict[str, object], key: str) -> str | None:
    value = spec.get(key)
    return value if isinstance(value, str) else None


def recover(
    commands: RunCommands, queue: RunQueue, active: Iterable[UUID], *, orphaned_running: bool
) -> None:
    """Re-queue queued runs after a restart; fail runs whose (only) worker was this process.

    Decided on each run's state in the log, not the read model, which may lag behind it.
    """
    for run_id in active:
        try:
            run = commands.load(run_id)
            if run.status == RunStatus.QUEUED:
                queue.enqueue(run_id, run.attempt, run.not_before)
            elif run.status == RunStatus.RUNNING and orphaned_running:
                commands.fail(run_id, reason="worker_lost", exit_code=None, attempt=run.attempt,
                              message="the service stopped while the run was executing")
        except (DomainError, RunNotFoundError):
            continue
