"""Executes one run attempt: claim it, launch the job, record its output and outcome."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any
from uuid import UUID

from controlroom.commands.append_limits import APPEND_TARGET_BYTES
from controlroom.commands.archive import archive_code, archive_log
from controlroom.commands.errors import RunNotFoundError
from controlroom.commands.handlers import RunCommands
from controlroom.commands.outputs import collect_outputs
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
from controlroom.commands.reaper import (
    DEFAULT_LEASE_TIMEOUT_S,
    LeaseKeeper,
    LeaseStore,
    LeaseTiming,
)
from controlroom.commands.retrying import Backoff, is_unavailable
from controlroom.commands.scrubbing import REDACTED as REDACTED
from controlroom.commands.scrubbing import Scrubber
from controlroom.domain.errors import DomainError
from controlroom.domain.run import Run

log = logging.getLogger("controlroom.worker")

FLUSH_INTERVAL_S = 0.5
MAX_CHUNK_LINES = 500
STDERR_TAIL_LINES = 20
MAX_ERROR_CHARS = 4000
PROGRESS_LINE = re.compile(r"^::progress\s+(\d+(?:\.\d+)?)\s*(.*)$")
LINEAGE_LINE = re.compile(r"^::lineage\s+(\S+)\s+(\S+)\s*$")
RUN_TOKEN_MARGIN_S = 300
"""A run token outlives the run's timeout by this much (flushing, artifacts, clock skew)."""
COLLECT_OUTPUTS_ON_FAILURE = {"exit_code", "timeout"}
"""Failed attempts whose outputs are kept too (useful for diagnosis); not cancels or shutdowns."""
MAX_PENDING_BYTES = 8 * 1024 * 1024
"""Output (log, progress, lineage) kept in memory, in order, while the database is away: past
this the worker stops reading the job's output, so the job blocks on its pipe, losing nothing."""


class RunWorker:
    """Thin and idempotent: a duplicate delivery finds the attempt taken and does nothing."""

    def __init__(
        self, commands: RunCommands, executor: Executor, planner: JobPlanner, *,
        worker_id: str, base_url: str, tokens: TokenMinter | None = None,
        artifacts: ArtifactStore | None = None,
        leases: LeaseStore | None = None, lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
        lease_timing: LeaseTiming | None = None,
    ) -> None:
        self.leases = leases
        self.lease_timing = (lease_timing or LeaseTiming.of(lease_timeout_s)).check()
        self.commands = commands
        self.executor = executor
        self.planner = planner
        self.worker_id = worker_id
        self.base_url = base_url
        self.tokens = tokens
        self.artifacts = artifacts
        self.stopping = threading.Event()

    def execute(self, run_id: UUID, attempt: int) -> None:
        """Run `attempt` of `run_id` to an outcome, unless someone else has it."""
        try:
            self.commands.start(run_id, attempt, self.worker_id)
        except (DomainError, RunNotFoundError) as e:
            log.info("skipping run %s attempt %s: %s", run_id, attempt, e)
            return
        lease = LeaseKeeper(self.leases, run_id, attempt, self.worker_id, self.lease_timing)
        if not lease.take():  # can't happen to a start's winner; the reaper fails the attempt
            log.error("run %s attempt %s: its lease is held elsewhere; not running it", run_id, attempt)
            return
        try:
            self._execute(run_id, attempt, lease)
        finally:
            lease.release()

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
        try:
            _Supervision(self, run, execution, scrub, plan.lineage_on_success, lease).run()
        finally:
            execution.cleanup()


class _Supervision:
    """Pumps one execution's output into the log and watches for cancel and timeout.

    While the database is away, output waits in memory (in order, up to MAX_PENDING_BYTES) and
    every write is retried with backoff — as long as the lease is certainly ours. Once it is
    not, the lease's watchdog kills the job and this attempt records nothing more.
    """

    def __init__(
        self, worker: RunWorker, run: Run, execution: Execution, scrub: Scrubber,
        lineage_on_success: list[tuple[str, str]], lease: LeaseKeeper | None = None,
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
        self.deadline = time.monotonic() + run.timeout_s
        self.timeout_s = run.timeout_s
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.pending: deque[tuple[Callable[..., Any], tuple[Any, ...], int]] = deque()
        self.pending_bytes = 0
        self.backoff = Backoff()
        self.retry_at = 0.0

    def run(self) -> None:
        guard: AbstractContextManager[object] = (
            self.lease.guard(self.execution.kill) if self.lease is not None else nullcontext())
        try:
            with guard:
                self._supervise()
        except (DomainError, RunNotFoundError) as e:
            # The run was finished elsewhere (e.g. an external runner reported it) while this
            # worker recorded output or the outcome: the log refuses more, the job must stop.
            log.info("run %s ended elsewhere (%s); stopping its process", self.run_id, e)
            self.execution.kill()
        except _Fenced:
            log.warning("run %s attempt %s: lease lost; the job is stopped and nothing more is "
                        "recorded (%d bytes of output unrecorded)",
                        self.run_id, self.attempt, self.pending_bytes)
            self.execution.kill()

    def _held(self) -> bool:
        return self.lease is None or self.lease.held()

    def _supervise(self) -> None:
        while (code := self._pump()) is None:
            if not self._held():
                raise _Fenced  # the reaper may hand the run on: stop, record nothing more
            run = self._load()
            if run is not None and (run.is_finished or run.attempt != self.attempt):
                # Ended elsewhere — an external runner reported its outcome (POST
                # /webhooks/continue): stop the job now, as a cancel does, and record nothing
                # more; a silent job would otherwise hold its slot until it exits.
                log.info("run %s attempt %s is %s elsewhere; stopping the job",
                         self.run_id, self.attempt, run.status)
                self.execution.kill()
                return
            if run is not None and run.cancel_requested:
                self.execution.kill()
                self._pump_rest()
                self._archive_log()
                self._finally(self.commands.confirm_cancelled, self.run_id,
                              "cancelled on request", self.attempt)
                return
            if time.monotonic() > self.deadline:
                self.execution.kill()
                self._pump_rest()
                self._fail("timeout", f"exceeded timeout_s={self.timeout_s}", None)
                return
            if self.stopping.is_set():
                self.execution.kill()
                self._pump_rest()
                self._fail("worker_shutdown", "the worker shut down mid-run", None)
                return
        if not self._held():
            raise _Fenced  # killed by the lease's watchdog: that exit is not the job's outcome
        if code == 0:
            self._collect_outputs()
            if self.lineage_on_success:
                self._finally(self.commands.lineage, self.run_id, self.lineage_on_success,
                              self.attempt)
            self._archive_log()
            self._finally(self.commands.complete, self.run_id, summary="exited with code 0",
                          exit_code=0, attempt=self.attempt)
        elif (failure := self.execution.failure()) is not None:
            self._fail(failure[0], self.scrub(failure[1])[-MAX_ERROR_CHARS:], None)
        else:
            tail = "\n".join(self.stderr_tail)[-MAX_ERROR_CHARS:]
            self._fail("exit_code", tail or f"exited with code {code}", code)

    def _load(self) -> Run | None:
        """The run as the log has it; None while the database is away (checked next time)."""
        if time.monotonic() < self.retry_at:
            return None
        try:
            return self.commands.load(self.run_id)
        except Exception as e:
            if not is_unavailable(e):
                raise
            self.retry_at = time.monotonic() + self.backoff.next()
            log.warning("run %s: could not load it (the database is away?): %s", self.run_id, e)
            return None

    def _fail(self, reason: str, message: str, exit_code: int | None) -> None:
        if reason in COLLECT_OUTPUTS_ON_FAILURE:
            self._collect_outputs()
        self._archive_log()
        self._finally(self.commands.fail, self.run_id, reason=reason, message=message,
                      exit_code=exit_code, attempt=self.attempt)

    def _archive_log(self) -> None:
        if self.artifacts is not None:
            self._finally(archive_log, self.commands, self.artifacts, self.run_id, self.attempt)

    def _collect_outputs(self) -> None:
        if self.artifacts is not None:
            self._finally(collect_outputs, self.commands, self.artifacts, self.execution,
                          self.run_id, self.attempt)

    def _finally(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """After all pending output: one of the attempt's last writes, retried until it lands
        (or the lease is lost, when the reaper decides the attempt's fate)."""
        while True:
            if not self._held():
                raise _Fenced
            if self._drain(wait=True):
                try:
                    write(*args, **kwargs)
                    self.backoff.reset()
                    return
                except Exception as e:
                    if not is_unavailable(e):
                        raise
                    log.warning("run %s: could not record its outcome yet: %s", self.run_id, e)
                    self.retry_at = time.monotonic() + self.backoff.next()

    def _record(self, write: Callable[..., Any], args: tuple[Any, ...], size: int) -> None:
        """Queue one write of output behind those still pending, then try to deliver them."""
        self.pending.append((write, args, size))
        self.pending_bytes += size
        self._drain()

    def _drain(self, wait: bool = False) -> bool:
        """Deliver pending writes in order; True once none is left. With `wait`, sleep out a
        backoff first (bounded by the lease); without, a backoff still running skips."""
        if self.pending or time.monotonic() < self.retry_at:
            delay = self.retry_at - time.monotonic()
            if delay > 0:
                if not wait:
                    return False
                if self.lease is not None:
                    self.lease.wait_change(delay)  # woken early if the lease is lost
                else:
                    time.sleep(delay)
                if not self._held():
                    raise _Fenced
        while self.pending:
            write, args, size = self.pending[0]
            try:
                write(*args)
            except Exception as e:
                if not is_unavailable(e):
                    raise
                self.retry_at = time.monotonic() + self.backoff.next()
                log.warning("run %s: %d bytes of output wait for the database: %s",
                            self.run_id, self.pending_bytes, e)
                return False
            self.backoff.reset()
            self.pending.popleft()
            self.pending_bytes -= size
        return True

    def _pump(self) -> int | None:
        """Record one interval's output; the exit code once the job is done."""
        if self.pending_bytes >= MAX_PENDING_BYTES and not self._drain(wait=True):
            # Full: leave the job's output in its pipe (the job blocks writing) until the
            # database takes what is pending; the lease's watchdog bounds how long.
            return None
        chunks: list[tuple[str, list[str]]] = []
        count = size = 0  # a flush is bounded in lines and bytes (docs/limits.md)
        for stream, raw in self.execution.lines(timeout=FLUSH_INTERVAL_S):
            line = self.scrub(raw)
            if (m := PROGRESS_LINE.match(line)) is not None:
                self._flush(chunks)
                chunks, count, size = [], 0, 0
                self._record(self.commands.progress,
                             (self.run_id, min(float(m[1]), 100.0), m[2], self.attempt),
                             len(line))
                continue
            if (m := LINEAGE_LINE.match(line)) is not None:
                self._flush(chunks)
                chunks, count, size = [], 0, 0
                self._record(self.commands.lineage, (self.run_id, [(m[1], m[2])], self.attempt),
                             len(line))
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
                self._flush(chunks)
                return None
        self._flush(chunks)
        if self.pending:
            self._drain()
        return self.execution.poll()

    def _pump_rest(self) -> None:
        while self._pump() is None:
            pass

    def _flush(self, chunks: list[tuple[str, list[str]]]) -> None:
        if chunks:
            entries = [(stream, "\n".join(lines), len(lines)) for stream, lines in chunks]
            self._record(self.commands.log, (self.run_id, entries, self.attempt),
                         sum(len(text) for _, text, _ in entries))


class _Fenced(Exception):
    """The lease is no longer certainly ours: stop and record nothing more."""


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
            if run.status == "queued":
                queue.enqueue(run_id, run.attempt, run.not_before)
            elif run.status == "running" and orphaned_running:
                commands.fail(run_id, reason="worker_lost", exit_code=None, attempt=run.attempt,
                              message="the service stopped while the run was executing")
        except (DomainError, RunNotFoundError):
            continue
