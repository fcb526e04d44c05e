"""The Run aggregate: one stream of events per run, owning the lifecycle invariants.

Public methods decide (check invariants, compute values) and then call a private
`@event` method that only mutates, so replaying the log never re-runs a decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from controlroom.domain.artifacts.artifact import Artifact
from controlroom.domain.errors import AttemptMismatchError, InvalidTransitionError
from controlroom.domain.runs.retry import RetryPolicy
from controlroom.domain.runs.status import ACTIVE, RunStatus

QUEUED, RUNNING = RunStatus.QUEUED.value, RunStatus.RUNNING.value
COMPLETED, FAILED, CANCELLED = (
    RunStatus.COMPLETED.value,
    RunStatus.FAILED.value,
    RunStatus.CANCELLED.value,
)


class Run(Aggregate):
    """A job submission and every attempt to execute it."""

    class_version = 2
    """v2: `client` (snapshots taken before it have none)."""

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Snapshots of v1 runs: no client was named."""
        state.setdefault("client", None)

    class RunSubmitted(Aggregate.Created):
        """`created_by` is the token's subject; `client` the submission's own `created_by`."""

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """v1 submissions named no client."""
            state.setdefault("client", None)

        tenant_id: str
        job_type: str
        created_by: str
        code: dict[str, Any]
        spec: dict[str, Any]
        sealed_secrets: str | None
        timeout_s: int
        max_retries: int
        labels: dict[str, str]
        callbacks: dict[str, str]
        idempotency_key: str | None
        request_hash: str
        job_name: str
        submitted_at: datetime
        client: str | None = None

    def __init__(
        self,
        tenant_id: str,
        job_type: str,
        created_by: str,
        code: dict[str, Any],
        spec: dict[str, Any],
        sealed_secrets: str | None,
        timeout_s: int,
        max_retries: int,
        labels: dict[str, str],
        callbacks: dict[str, str],
        idempotency_key: str | None,
        request_hash: str,
        job_name: str,
        submitted_at: datetime,
        client: str | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.job_type = job_type
        self.created_by = created_by
        self.code = code
        self.spec = spec
        self.sealed_secrets = sealed_secrets
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.labels = labels
        self.callbacks = callbacks
        self.idempotency_key = idempotency_key
        self.request_hash = request_hash
        self.job_name = job_name
        self.submitted_at = submitted_at
        self.client = client
        self.status: str = QUEUED
        self.attempt = 1
        self.cancel_requested = False
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.not_before: datetime | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> Run:
        """A copy to decide on (a process keeps recently used runs in memory and hands each
        command its own). Only scalars change after submission; the submission's containers
        (code, spec, labels, callbacks) never do, so the copy shares them instead of copying
        megabytes of code for every reported line."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin._pending_events = list(self._pending_events)
        return twin

    @classmethod
    def submit(cls, *, run_id: UUID, **fields: Any) -> Run:
        """Record a new submission; `fields` are those of RunSubmitted."""
        return cls._create(cls.RunSubmitted, id=run_id, **fields)

    # -- decisions -------------------------------------------------------------

    @property
    def is_finished(self) -> bool:
        """True once nothing more can ever be recorded on this run."""
        return self.status not in ACTIVE

    def recorded_seq(self, attempt: int) -> int:
        """The highest sequence number its worker recorded for `attempt` (0: none yet).

        A worker numbers what it records of an attempt (output, artifacts, the outcome) 1, 2,
        …; a write it repeats — a flush redone after a crash or a timeout that hid a commit —
        carries a number already recorded and changes nothing: exactly once, by (run, attempt,
        seq). A write of several events is one append whose last event carries the number.
        Runs loaded from snapshots taken before the number existed have none.
        """
        if getattr(self, "output_attempt", 0) != attempt:
            return 0
        return int(getattr(self, "output_seq", 0))

    def _repeated(self, attempt: int | None, seq: int | None) -> bool:
        return seq is not None and attempt is not None and seq <= self.recorded_seq(attempt)

    def start(self, *, attempt: int, worker_id: str, now: datetime) -> None:
        """A worker begins executing `attempt`; only one start per attempt wins."""
        if self.status != QUEUED:
            raise InvalidTransitionError("start", self.status)
        if attempt != self.attempt:
            raise AttemptMismatchError(attempt, self.attempt)
        self._started(attempt=attempt, worker_id=worker_id, at=now)

    def progress(
        self, *, percent: float | None, message: str, now: datetime, attempt: int | None = None,
        reported_at: datetime | None = None, seq: int | None = None,
    ) -> None:
        """Report how far the current attempt has got (`reported_at`: the reporter's clock)."""
        if self._repeated(attempt, seq):
            return
        self._require_active("report progress on", attempt)
        self._progressed(percent=percent, message=message, at=now, reported_at=reported_at,
                         seq=seq)

    def log(
        self, *, text: str, stream: str, lines: int, now: datetime, attempt: int | None = None,
        reported_at: datetime | None = None, seq: int | None = None,
    ) -> None:
        """Append a chunk of log output."""
        if self._repeated(attempt, seq):
            return
        self._require_active("log to", attempt)
        self._logged(text=text, stream=stream, lines=lines, attempt=self.attempt, at=now,
                     reported_at=reported_at, seq=seq)

    def add_artifact(
        self, *, artifact: Artifact | Mapping[str, Any], now: datetime, attempt: int | None = None,
        reported_at: datetime | None = None, seq: int | None = None,
    ) -> None:
        """Attach an artifact (metadata only; bytes live in the artifact store, or elsewhere).

        A mapping is an artifact's fields as a worker spooled them (perhaps a worker of an
        earlier release): recorded as given, as they always were.
        """
        if self._repeated(attempt, seq):
            return
        self._require_active("add an artifact to", attempt)
        fields = artifact.fields() if isinstance(artifact, Artifact) else dict(artifact)
        self._artifact_added(artifact=fields, at=now, reported_at=reported_at, seq=seq)

    def record_lineage(
        self, *, source: str, target: str, now: datetime, attempt: int | None = None,
        reported_at: datetime | None = None, seq: int | None = None,
    ) -> None:
        """Record that this run read `source` and wrote `target`."""
        if self._repeated(attempt, seq):
            return
        self._require_active("record lineage on", attempt)
        self._lineage_recorded(source=source, target=target, at=now, reported_at=reported_at,
                               seq=seq)

    def complete(
        self, *, summary: str, exit_code: int | None, now: datetime, attempt: int | None = None,
        seq: int | None = None,
    ) -> None:
        """The current attempt succeeded."""
        if self._repeated(attempt, seq):
            return
        if self.status != RUNNING:
            raise InvalidTransitionError("complete", self.status)
        self._check_attempt(attempt)
        self._completed(summary=summary, exit_code=exit_code, at=now, seq=seq)

    def fail(
        self,
        *,
        reason: str,
        message: str,
        exit_code: int | None,
        now: datetime,
        retry: RetryPolicy | None = None,
        attempt: int | None = None,
        seq: int | None = None,
    ) -> None:
        """The current attempt failed; schedule another while retries remain (and nobody cancelled)."""
        if self._repeated(attempt, seq):
            return
        self._require_active("fail", attempt)
        retrying = retry is not None and not self.cancel_requested and self.attempt <= self.max_retries
        self._failed(
            reason=reason, message=message, exit_code=exit_code, at=now, retrying=retrying,
            seq=seq,
        )
        if retry is not None and retrying:
            delay = retry.delay(self.attempt)
            self._retry_scheduled(
                attempt=self.attempt + 1, not_before=now + timedelta(seconds=delay), at=now
            )

    def request_cancel(self, *, by: str, now: datetime) -> bool:
        """Ask for cancellation; a queued run is cancelled at once. False if already asked."""
        self._require_active("cancel")
        if self.cancel_requested:
            return False
        self._cancel_requested(by=by, at=now)
        if self.status == QUEUED:
            self._cancelled(reason="cancelled before it started", at=now)
        return True

    def confirm_cancelled(
        self, *, reason: str, now: datetime, attempt: int | None = None, seq: int | None = None,
    ) -> None:
        """The worker stopped the attempt after a cancellation request."""
        if self._repeated(attempt, seq):
            return
        if self.status != RUNNING or not self.cancel_requested:
            raise InvalidTransitionError("confirm cancellation of", self.status)
        self._check_attempt(attempt)
        self._cancelled(reason=reason, at=now, seq=seq)

    def _require_active(self, action: str, attempt: int | None = None) -> None:
        if self.status not in ACTIVE:
            raise InvalidTransitionError(action, self.status)
        self._check_attempt(attempt)

    def _check_attempt(self, attempt: int | None) -> None:
        """Fences off a worker still acting on an attempt that was superseded (e.g. reaped)."""
        if attempt is not None and attempt != self.attempt:
            raise AttemptMismatchError(attempt, self.attempt)

    # -- mutations (replayed from the log) --------------------------------------

    @event("RunStarted")
    def _started(self, attempt: int, worker_id: str, at: datetime) -> None:
        self.status = RUNNING
        self.started_at = at
        self.worker_id = worker_id

    # `reported_at` (the reporter's own clock, if it said) and `seq` (the worker's number for
    # what it records of an attempt) came later: events recorded before them have none, and
    # load with the default.

    def _numbered(self, seq: int | None) -> None:
        if seq is not None:
            self.output_attempt = self.attempt
            self.output_seq = seq

    @event("RunProgressed")
    def _progressed(self, percent: float | None, message: str, at: datetime,
                    reported_at: datetime | None = None, seq: int | None = None) -> None:
        self._numbered(seq)

    @event("RunLogged")
    def _logged(self, text: str, stream: str, lines: int, attempt: int, at: datetime,
                reported_at: datetime | None = None, seq: int | None = None) -> None:
        self._numbered(seq)

    @event("ArtifactAdded")
    def _artifact_added(self, artifact: dict[str, Any], at: datetime,
                        reported_at: datetime | None = None, seq: int | None = None) -> None:
        self._numbered(seq)

    @event("LineageEdgeRecorded")
    def _lineage_recorded(self, source: str, target: str, at: datetime,
                          reported_at: datetime | None = None, seq: int | None = None) -> None:
        self._numbered(seq)

    @event("RunCompleted")
    def _completed(self, summary: str, exit_code: int | None, at: datetime,
                   seq: int | None = None) -> None:
        self._numbered(seq)
        self.status = COMPLETED
        self.finished_at = at

    @event("RunFailed")
    def _failed(
        self, reason: str, message: str, exit_code: int | None, at: datetime,
        retrying: bool = False, seq: int | None = None,
    ) -> None:
        self._numbered(seq)
        self.status = FAILED
        self.finished_at = at

    @event("RunCancelRequested")
    def _cancel_requested(self, by: str, at: datetime) -> None:
        self.cancel_requested = True

    @event("RunCancelled")
    def _cancelled(self, reason: str, at: datetime, seq: int | None = None) -> None:
        self._numbered(seq)
        self.status = CANCELLED
        self.finished_at = at

    @event("RunRetryScheduled")
    def _retry_scheduled(self, attempt: int, not_before: datetime, at: datetime) -> None:
        self.status = QUEUED
        self.attempt = attempt
        self.not_before = not_before
        self.cancel_requested = False
        self.started_at = None
        self.finished_at = None

    if TYPE_CHECKING:
        # Each `@event("...")` method above defines its event class when this class is made,
        # with the method's parameters as its fields. Declared again here, field for field
        # (tests/unit/test_event_declarations.py holds the two together), for type checking.
        class RunStarted(Aggregate.Event):
            attempt: int
            worker_id: str
            at: datetime

        class RunProgressed(Aggregate.Event):
            percent: float | None
            message: str
            at: datetime
            reported_at: datetime | None = None
            seq: int | None = None

        class RunLogged(Aggregate.Event):
            text: str
            stream: str
            lines: int
            attempt: int
            at: datetime
            reported_at: datetime | None = None
            seq: int | None = None

        class ArtifactAdded(Aggregate.Event):
            artifact: dict[str, Any]
            at: datetime
            reported_at: datetime | None = None
            seq: int | None = None

        class LineageEdgeRecorded(Aggregate.Event):
            source: str
            target: str
            at: datetime
            reported_at: datetime | None = None
            seq: int | None = None

        class RunCompleted(Aggregate.Event):
            summary: str
            exit_code: int | None
            at: datetime
            seq: int | None = None

        class RunFailed(Aggregate.Event):
            reason: str
            message: str
            exit_code: int | None
            at: datetime
            retrying: bool = False
            seq: int | None = None

        class RunCancelRequested(Aggregate.Event):
            by: str
            at: datetime

        class RunCancelled(Aggregate.Event):
            reason: str
            at: datetime
            seq: int | None = None

        class RunRetryScheduled(Aggregate.Event):
            attempt: int
            not_before: datetime
            at: datetime
