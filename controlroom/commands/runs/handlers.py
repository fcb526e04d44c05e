"""Command handlers: load, decide, record — each returns the position it wrote."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import msgspec
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from controlroom.commands.append_limits import in_appends, split_log
from controlroom.commands.application import ControlRoom, replay
from controlroom.commands.errors import (
    IdempotencyConflictError,
    RunNotFoundError,
)
from controlroom.commands.execution.scrubbing import Scrubber
from controlroom.commands.messages import (
    Artifact,
    Lineage,
    Log,
    Progress,
    Recorded,
    RunEvent,
    SubmitJob,
    Submitted,
)
from controlroom.commands.ports import SecretBox
from controlroom.commands.updates import update
from controlroom.domain.artifacts.artifact import Artifact as RunArtifact
from controlroom.domain.artifacts.external import external_artifact
from controlroom.domain.runs.retry import RetryPolicy
from controlroom.domain.runs.run import Run

Clock = Callable[[], datetime]


def _event_size(event: RunEvent) -> int:
    """About what an event adds to an append (its text; the rest is small and bounded)."""
    match event:
        case Log(text=text):
            return len(text)
        case Progress(message=message):
            return len(message)
        case Lineage(source=source, target=target):
            return len(source) + len(target)
        case Artifact(path=path, url=url):
            return len(path) + len(url)
    return 0


def _repeated(run: Run, attempt: int | None, seq: int | None) -> bool:
    """Whether the worker's write `seq` of `attempt` is in the log already (checked once per
    write: a write of several events is one append, and only its last event is numbered)."""
    return seq is not None and attempt is not None and seq <= run.recorded_seq(attempt)


def _last(seq: int | None, i: int, items: Sequence[Any]) -> int | None:
    """`seq` for the last event of a numbered write, None for those before it."""
    return seq if i == len(items) - 1 else None


def utcnow() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


def idempotent_run_id(tenant_id: str, key: str) -> UUID:
    """The run id a tenant's Idempotency-Key always maps to."""
    return uuid5(NAMESPACE_URL, f"controlroom:{tenant_id}:{key}")


class RunCommands:
    """Every state change of a run goes through here."""

    def __init__(
        self,
        app: ControlRoom,
        secrets: SecretBox,
        *,
        clock: Clock = utcnow,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.app = app
        self.secrets = secrets
        self.clock = clock
        self.retry = retry or RetryPolicy()

    def submit(self, cmd: SubmitJob) -> Submitted:
        """Record a submission; a repeated Idempotency-Key returns the first run."""
        run_id = (
            idempotent_run_id(cmd.tenant_id, cmd.idempotency_key)
            if cmd.idempotency_key
            else uuid4()
        )
        run = Run.submit(
            run_id=run_id,
            tenant_id=cmd.tenant_id,
            job_type=cmd.job_type,
            created_by=cmd.created_by,
            client=cmd.client,
            code=cmd.code,
            spec=cmd.spec,
            sealed_secrets=self.secrets.seal(cmd.secrets) if cmd.secrets else None,
            timeout_s=cmd.timeout_s,
            max_retries=cmd.max_retries,
            labels=cmd.labels,
            callbacks=cmd.callbacks,
            idempotency_key=cmd.idempotency_key,
            request_hash=cmd.request_hash,
            job_name=cmd.job_name,
            submitted_at=self.clock(),
        )
        try:
            recordings = self.app.save(run)
        except IntegrityError:
            if not cmd.idempotency_key:
                raise
            existing = self._get(cmd.tenant_id, run_id)
            if existing.request_hash != cmd.request_hash:
                raise IdempotencyConflictError(cmd.idempotency_key, run_id) from None
            return Submitted(
                run_id, self._position_of(run_id), created=False,
                submitted_at=existing.submitted_at,
            )
        return Submitted(
            run_id, recordings[-1].notification.id, created=True, submitted_at=run.submitted_at
        )

    def record(
        self, tenant_id: str, run_id: UUID, events: Sequence[RunEvent], *,
        attempt: int | None = None, redact: Sequence[str] = (),
    ) -> Recorded:
        """Record reported events, scrubbed of the run's secrets and `redact` (fenced by `attempt`).

        Scrubbed and cut to size first; then recorded in order, in appends of bounded size.
        """
        # Its tenant and secrets never change: a copy this process holds will do to check and
        # scrub, and to decide on first.
        held = self._held(tenant_id, run_id)
        run = held if held is not None else self._get(tenant_id, run_id)
        checked = held is None
        scrub = Scrubber([*self.unseal_secrets(run).values(), *redact])
        items: list[RunEvent] = []
        for item in events:
            match item:
                case Progress(message=message):
                    items.append(msgspec.structs.replace(item, message=scrub(message)))
                case Log(text=text, stream=stream, timestamp=reported_at):
                    items += [Log(text=piece, stream=stream, timestamp=reported_at)
                              for piece in split_log(scrub(text))]
                case _:
                    items.append(item)

        def decide(batch: list[RunEvent]) -> Callable[[Run], None]:
            def apply(run: Run) -> None:
                now = self.clock()
                for item in batch:
                    ts = item.timestamp  # the reporter's clock, kept beside `now`
                    match item:
                        case Progress(percent=percent, message=message):
                            run.progress(percent=percent, message=message, now=now,
                                         attempt=attempt, reported_at=ts)
                        case Log(text=text, stream=stream):
                            run.log(text=text, stream=stream, lines=text.count("\n") + 1,
                                    now=now, attempt=attempt, reported_at=ts)
                        case Lineage(source=source, target=target):
                            run.record_lineage(source=source, target=target, now=now,
                                               attempt=attempt, reported_at=ts)
                        case Artifact():
                            run.add_artifact(artifact=external_artifact(
                                run_id, run.attempt, path=item.path, url=item.url,
                                content_type=item.content_type, size=item.size,
                                sha256=item.sha256), now=now, attempt=attempt, reported_at=ts)
            return apply

        recorded = Recorded(position=0, version=run.version, status=run.status)
        for batch in in_appends(items, _event_size):
            # Each later append decides on what the one before left.
            run, position = self._apply(tenant_id, run_id, decide(batch), run, checked=checked)
            checked = True
            recorded = Recorded(position=position, version=run.version, status=run.status)
        return recorded

    def request_cancel(self, tenant_id: str, run_id: UUID, by: str) -> int:
        """Ask for a run to stop; a queued run is cancelled immediately."""
        return self._update(
            tenant_id, run_id, lambda run: run.request_cancel(by=by, now=self.clock())
        )

    # -- worker-side commands (no tenant: workers act on ids they were handed) --

    def start(self, run_id: UUID, attempt: int, worker_id: str) -> int:
        """Claim `attempt` for this worker; raises if someone else got there first."""
        return self._update(
            None, run_id, lambda run: run.start(attempt=attempt, worker_id=worker_id, now=self.clock())
        )

    def log(
        self, run_id: UUID, chunks: Sequence[tuple[str, str, int]], attempt: int | None = None,
        *, seq: int | None = None, reported_at: datetime | None = None,
    ) -> int:
        """Record (stream, text, line count) chunks of job output, in appends of bounded size.

        With `seq` (the worker's number for this write, see `Run.recorded_seq`) it is one
        append, so that a repeat is recognised whole: the caller keeps such writes small.
        """
        pieces: list[tuple[str, str, int]] = []
        for stream, text, lines in chunks:
            cut = split_log(text)
            pieces += [(stream, text, lines)] if len(cut) == 1 else [
                (stream, piece, piece.count("\n") + 1) for piece in cut]

        def decide(batch: list[tuple[str, str, int]]) -> Callable[[Run], None]:
            def apply(run: Run) -> None:
                if _repeated(run, attempt, seq):
                    return
                now = self.clock()
                for i, (stream, text, lines) in enumerate(batch):
                    run.log(text=text, stream=stream, lines=lines, now=now, attempt=attempt,
                            reported_at=reported_at, seq=_last(seq, i, batch))
            return apply

        position = 0
        batches = [pieces] if seq is not None else in_appends(pieces, lambda piece: len(piece[1]))
        for batch in batches:
            position = self._update(None, run_id, decide(batch))
        return position

    def progress(
        self, run_id: UUID, percent: float | None, message: str, attempt: int | None = None,
        *, seq: int | None = None, reported_at: datetime | None = None,
    ) -> int:
        """Record progress the job reported."""
        return self._update(
            None, run_id,
            lambda run: run.progress(percent=percent, message=message, now=self.clock(),
                                     attempt=attempt, reported_at=reported_at, seq=seq),
        )

    def lineage(
        self, run_id: UUID, edges: Sequence[tuple[str, str]], attempt: int | None = None,
        *, seq: int | None = None, reported_at: datetime | None = None,
    ) -> int:
        """Record lineage edges (source, target) the job reported or its type implies."""

        def decide(run: Run) -> None:
            if _repeated(run, attempt, seq):
                return
            now = self.clock()
            for i, (source, target) in enumerate(edges):
                run.record_lineage(source=source, target=target, now=now, attempt=attempt,
                                   reported_at=reported_at, seq=_last(seq, i, edges))

        return self._update(None, run_id, decide)

    def add_artifacts(
        self, run_id: UUID, artifacts: Sequence[RunArtifact | Mapping[str, Any]],
        attempt: int | None = None, *, seq: int | None = None,
    ) -> int:
        """Record artifacts (metadata; the bytes are already in the artifact store); a mapping
        is an artifact's fields as a worker spooled them."""

        def decide(run: Run) -> None:
            if _repeated(run, attempt, seq):
                return
            now = self.clock()
            for i, artifact in enumerate(artifacts):
                run.add_artifact(artifact=artifact, now=now, attempt=attempt,
                                 seq=_last(seq, i, artifacts))

        return self._update(None, run_id, decide)

    def upload_artifact(
        self, tenant_id: str, run_id: UUID, artifact: RunArtifact, attempt: int | None = None
    ) -> int:
        """Record an uploaded artifact on the tenant's run, for its current attempt (whatever
        `artifact` says)."""

        def decide(run: Run) -> None:
            run.add_artifact(artifact=dataclasses.replace(artifact, attempt=run.attempt),
                             now=self.clock(), attempt=attempt)

        return self._update(tenant_id, run_id, decide)

    def complete(
        self, run_id: UUID, *, summary: str, exit_code: int | None, attempt: int | None = None,
        seq: int | None = None,
    ) -> int:
        """The current attempt succeeded."""
        return self._update(
            None,
            run_id,
            lambda run: run.complete(summary=summary, exit_code=exit_code, now=self.clock(),
                                     attempt=attempt, seq=seq),
        )

    def fail(
        self, run_id: UUID, *, reason: str, message: str, exit_code: int | None,
        attempt: int | None = None, seq: int | None = None,
    ) -> int:
        """The current attempt failed; a retry is scheduled while retries remain."""
        return self._update(
            None,
            run_id,
            lambda run: run.fail(
                reason=reason, message=message, exit_code=exit_code, now=self.clock(),
                retry=self.retry, attempt=attempt, seq=seq,
            ),
        )

    def confirm_cancelled(
        self, run_id: UUID, reason: str, attempt: int | None = None, *, seq: int | None = None,
    ) -> int:
        """The worker has stopped a run whose cancellation was requested."""
        return self._update(
            None, run_id,
            lambda run: run.confirm_cancelled(reason=reason, now=self.clock(), attempt=attempt,
                                              seq=seq),
        )

    def probe(self) -> None:
        """Raise unless an append could take the event log's lock right now."""
        probe = getattr(self.app.recorder, "probe", None)
        if probe is not None:
            probe()
        else:
            self.app.recorder.max_notification_id()

    def load(self, run_id: UUID) -> Run:
        """The run's current state, straight from the log."""
        return self._get(None, run_id)

    def unseal_secrets(self, run: Run) -> dict[str, str]:
        """The plaintext secrets of a run, for handing to its process only."""
        return self.secrets.unseal(run.sealed_secrets) if run.sealed_secrets else {}

    # -- plumbing ---------------------------------------------------------------

    def _get(self, tenant_id: str | None, run_id: UUID) -> Run:
        try:
            run: Run = self.app.repository.get(run_id, projector_func=replay)
        except AggregateNotFoundError:
            raise RunNotFoundError(run_id) from None
        if tenant_id is not None and run.tenant_id != tenant_id:
            raise RunNotFoundError(run_id)
        return run

    def _update(self, tenant_id: str | None, run_id: UUID, decide: Callable[[Run], object]) -> int:
        return self._apply(tenant_id, run_id, decide)[1]

    def _held(self, tenant_id: str | None, run_id: UUID) -> Run | None:
        """The copy of the run this process holds, unchecked against the log (None if none)."""
        run: Run | None = self.app.held(run_id)
        if run is not None and tenant_id is not None and run.tenant_id != tenant_id:
            raise RunNotFoundError(run_id)
        return run

    def _apply(
        self, tenant_id: str | None, run_id: UUID, decide: Callable[[Run], object],
        loaded: Run | None = None, *, checked: bool = True,
    ) -> tuple[Run, int]:
        """Decide on the run and save: the run after it, and the position of its latest event.

        Decided first on `loaded` (current unless not `checked`), else on the copy this process
        holds; an append on a copy behind the log conflicts, and the run is read from it.
        """
        if loaded is None:
            loaded, checked = self._held(tenant_id, run_id), False
        run, position = update(
            self.app, run_id, decide, name=f"run {run_id}",
            loaded=loaded if checked else None, held=None if checked else loaded,
            load=lambda rid: self._get(tenant_id, rid),
        )
        # A repeated write appends nothing, yet its reader must see the first one's effect.
        return run, position if position is not None else self._position_of(run_id)

    def _position_of(self, run_id: UUID) -> int:
        """Position of the run's latest event (nothing to wait for if already applied)."""
        del run_id
        return self.app.recorder.max_notification_id() or 0
