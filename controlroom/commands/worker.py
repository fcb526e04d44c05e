"""Executes one run attempt: claim it, launch the job, record its output and outcome."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
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
from controlroom.commands.reaper import DEFAULT_LEASE_TIMEOUT_S, LeaseKeeper, LeaseStore
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


class RunWorker:
    """Thin and idempotent: a duplicate delivery finds the attempt taken and does nothing."""

    def __init__(
        self, commands: RunCommands, executor: Executor, planner: JobPlanner, *,
        worker_id: str, base_url: str, tokens: TokenMinter | None = None,
        artifacts: ArtifactStore | None = None,
        leases: LeaseStore | None = None, lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
    ) -> None:
        self.leases = leases
        self.lease_timeout_s = lease_timeout_s
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
        lease = LeaseKeeper(self.leases, run_id, attempt, self.worker_id, self.lease_timeout_s)
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
    """Pumps one execution's output into the log and watches for cancel and timeout."""

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

    def run(self) -> None:
        try:
            self._supervise()
        except (DomainError, RunNotFoundError) as e:
            # The run was finished elsewhere (e.g. an external runner reported it) while this
            # worker recorded output or the outcome: the log refuses more, the job must stop.
            log.info("run %s ended elsewhere (%s); stopping its process", self.run_id, e)
            self.execution.kill()

    def _supervise(self) -> None:
        while (code := self._pump()) is None:
            if self.lease is not None and not self.lease.held():
                # The reaper may have handed the run on: stop the job, record nothing more.
                log.warning("run %s attempt %s: lease lost; stopping the job",
                            self.run_id, self.attempt)
                self.execution.kill()
                return
            run = self.commands.load(self.run_id)
            if run.is_finished or run.attempt != self.attempt:
                # Ended elsewhere — an external runner reported its outcome (POST
                # /webhooks/continue): stop the job now, as a cancel does, and record nothing
                # more; a silent job would otherwise hold its slot until it exits.
                log.info("run %s attempt %s is %s elsewhere; stopping the job",
                         self.run_id, self.attempt, run.status)
                self.execution.kill()
                return
            if run.cancel_requested:
                self.execution.kill()
                self._pump_rest()
                self._archive_log()
                self.commands.confirm_cancelled(self.run_id, "cancelled on request", self.attempt)
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
        if code == 0:
            self._collect_outputs()
            if self.lineage_on_success:
                self.commands.lineage(self.run_id, self.lineage_on_success, self.attempt)
            self._archive_log()
            self.commands.complete(
                self.run_id, summary="exited with code 0", exit_code=0, attempt=self.attempt
            )
        elif (failure := self.execution.failure()) is not None:
            self._fail(failure[0], self.scrub(failure[1])[-MAX_ERROR_CHARS:], None)
        else:
            tail = "\n".join(self.stderr_tail)[-MAX_ERROR_CHARS:]
            self._fail("exit_code", tail or f"exited with code {code}", code)

    def _fail(self, reason: str, message: str, exit_code: int | None) -> None:
        if reason in COLLECT_OUTPUTS_ON_FAILURE:
            self._collect_outputs()
        self._archive_log()
        self.commands.fail(self.run_id, reason=reason, message=message, exit_code=exit_code,
                           attempt=self.attempt)

    def _archive_log(self) -> None:
        if self.artifacts is not None:
            archive_log(self.commands, self.artifacts, self.run_id, self.attempt)

    def _collect_outputs(self) -> None:
        if self.artifacts is not None:
            collect_outputs(self.commands, self.artifacts, self.execution, self.run_id, self.attempt)

    def _pump(self) -> int | None:
        """Record one interval's output; the exit code once the job is done."""
        chunks: list[tuple[str, list[str]]] = []
        count = size = 0  # a flush is bounded in lines and bytes (docs/limits.md)
        for stream, raw in self.execution.lines(timeout=FLUSH_INTERVAL_S):
            line = self.scrub(raw)
            if (m := PROGRESS_LINE.match(line)) is not None:
                self._flush(chunks)
                chunks, count, size = [], 0, 0
                self.commands.progress(self.run_id, min(float(m[1]), 100.0), m[2], self.attempt)
                continue
            if (m := LINEAGE_LINE.match(line)) is not None:
                self._flush(chunks)
                chunks, count, size = [], 0, 0
                self.commands.lineage(self.run_id, [(m[1], m[2])], self.attempt)
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
        return self.execution.poll()

    def _pump_rest(self) -> None:
        while self._pump() is None:
            pass

    def _flush(self, chunks: list[tuple[str, list[str]]]) -> None:
        if chunks:
            self.commands.log(
                self.run_id, [(stream, "\n".join(lines), len(lines)) for stream, lines in chunks],
                self.attempt,
            )


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
