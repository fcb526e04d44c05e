"""What each Run event says by webhook: the run's facts kept between events, and the message.

Payloads stay small — links, not blobs: the summary is capped, artifacts are `{path, url}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from controlroom.domain.runs.run import Run
from controlroom.domain.runs.status import RunStatus
from controlroom.domain.webhooks.rules import CALLBACK_OF

MAX_SUMMARY_CHARS = 2000
MAX_ARTIFACTS = 100
API = "/api/v1"


@dataclass(frozen=True)
class RunFacts:
    """What the outbox remembers of a run between its events."""

    tenant_id: str
    job_type: str
    job_name: str
    callbacks: dict[str, str]
    attempt: int = 1
    started_at: datetime | None = None
    artifacts: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunFacts:
        """From a webhook_runs row (as GET_FACTS selects it; the event store's rows are dicts)."""
        return cls(**row)

    @property
    def status(self) -> RunStatus:
        """The run's status between a start or a retry and its end: what an artifact, progress or
        lineage edge is recorded in (a Run takes none once it has ended)."""
        return RunStatus.QUEUED if self.started_at is None else RunStatus.RUNNING

    def params(self, run_id: UUID) -> dict[str, Any]:
        """The row's parameters for PUT_FACTS."""
        return {"run_id": run_id, "tenant_id": self.tenant_id, "job_type": self.job_type,
                "job_name": self.job_name, "callbacks": Jsonb(self.callbacks),
                "attempt": self.attempt, "started_at": self.started_at,
                "artifacts": Jsonb(self.artifacts)}


@dataclass(frozen=True)
class Message:
    """One webhook message: its type, when it happened, the envelope, and the callback it goes to."""

    event_type: str
    at: datetime
    envelope: dict[str, Any]
    callback: str | None


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def _capped(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_SUMMARY_CHARS:
        return text
    return text[: MAX_SUMMARY_CHARS - 1] + "…"


def _data(run_id: UUID, facts: RunFacts, base_url: str, status: RunStatus, **extra: Any) -> dict[str, Any]:
    """The run callback's body `data`: the PRD fields first, then extensions."""
    return {
        "run_id": str(run_id), "status": status.value, "summary": _capped(extra.pop("summary", None)),
        "artifacts": facts.artifacts[:MAX_ARTIFACTS], "started_at": _iso(facts.started_at),
        "completed_at": _iso(extra.pop("completed_at", None)), "attempt": facts.attempt,
        "job_type": facts.job_type, "job_name": facts.job_name,
        "run_url": f"{base_url}{API}/runs/{run_id}", **extra,
    }


def message_for(
    facts: RunFacts | None, e: Any, position: int, base_url: str
) -> tuple[RunFacts | None, Message | None]:
    """The run's facts after event `e` and the message it makes (None for events that make none)."""
    run_id: UUID = e.originator_id
    if isinstance(e, Run.RunSubmitted):
        facts = RunFacts(e.tenant_id, e.job_type, e.job_name, dict(e.callbacks))
        return facts, _message("run.submitted", e.submitted_at, position,
                               _data(run_id, facts, base_url, RunStatus.QUEUED))
    if facts is None:  # a run this projection never saw submitted: nothing to say about it
        return None, None
    match e:
        case Run.RunStarted():
            facts = replace(facts, attempt=e.attempt, started_at=e.at)
            kind, data = "run.started", _data(run_id, facts, base_url, RunStatus.RUNNING)
        case Run.RunProgressed():
            kind, data = "run.progress", _data(run_id, facts, base_url, facts.status, progress={
                "percent": e.percent, "message": _capped(e.message)})
        case Run.ArtifactAdded():
            shown = {"path": str(e.artifact.get("path")),
                     "url": e.artifact.get("url")
                     or f"{base_url}{API}/artifacts/{e.artifact.get('artifact_id')}/content"}
            facts = replace(facts, artifacts=[*facts.artifacts, shown])
            kind, data = "run.artifact_added", _data(run_id, facts, base_url, facts.status,
                                                     artifact=shown)
        case Run.LineageEdgeRecorded():
            kind, data = "lineage.edge_recorded", _data(run_id, facts, base_url, facts.status,
                                                        source=e.source, target=e.target)
        case Run.RunCompleted():
            kind, data = "run.completed", _data(run_id, facts, base_url, RunStatus.COMPLETED,
                                                summary=e.summary, completed_at=e.at)
        case Run.RunFailed():
            retrying = bool(getattr(e, "retrying", False))
            kind = "run.retrying" if retrying else "run.failed"
            data = _data(run_id, facts, base_url, RunStatus.FAILED, summary=e.message, completed_at=e.at,
                         error={"reason": e.reason, "message": _capped(e.message)},
                         exit_code=e.exit_code, retrying=retrying)
        case Run.RunCancelled():
            kind, data = "run.cancelled", _data(run_id, facts, base_url, RunStatus.CANCELLED,
                                                summary=e.reason, completed_at=e.at)
        case Run.RunRetryScheduled():
            return replace(facts, attempt=e.attempt, started_at=None), None
        case _:
            return facts, None
    return facts, _message(kind, e.at, position, data)


def _message(kind: str, at: datetime, position: int, data: dict[str, Any]) -> Message:
    envelope = {"type": kind, "timestamp": at.isoformat(), "position": position, "data": data}
    return Message(kind, at, envelope, CALLBACK_OF.get(kind))
