"""`run_events` read model: every Run event as the live streams show it (SSE name, JSON data).

Rows carry the event's version in its run (the id on a run's stream) and its position in the
log (the id on the tenant feed). Data holds only what clients may see: never sealed secrets,
code, callbacks or idempotency keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from psycopg.types.json import Jsonb

from controlroom.domain.runs.run import Run
from controlroom.domain.runs.status import RunStatus
from controlroom.projections.view import ReadModelView

PROJECTION = "run_events"
EVENT_TYPES = ("status", "progress", "log", "artifact", "lineage")
"""SSE event names of run events (`end` and `resume` are the streams' own)."""

_COLUMNS = "position, run_id, version, event, type, data, terminal, at"
INSERT_FIRST = f"""
INSERT INTO run_events (tenant_id, job_type, {_COLUMNS})
VALUES (%(tenant_id)s, %(job_type)s, %(position)s, %(run_id)s, %(version)s, %(event)s, %(type)s,
    %(data)s, %(terminal)s, %(at)s)
ON CONFLICT DO NOTHING
"""
INSERT_NEXT = f"""
INSERT INTO run_events (tenant_id, job_type, {_COLUMNS})
SELECT tenant_id, job_type, %(position)s, %(run_id)s, %(version)s, %(event)s, %(type)s, %(data)s,
    %(terminal)s, %(at)s
FROM run_events WHERE run_id = %(run_id)s AND version = 1
ON CONFLICT DO NOTHING
"""
"""Later events take tenant and job type from the run's first row (this model's own data)."""


@dataclass(slots=True)
class RunEventRow:
    """One row of the read model, as the API streams it."""

    position: int
    tenant_id: str
    run_id: UUID
    version: int
    job_type: str
    event: str
    type: str
    data: str
    """JSON text."""
    terminal: bool
    at: datetime
    encoded: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    """Memo of this event's wire forms, shared by every subscriber that is sent it."""


class RunEventsView(ReadModelView):
    """Writes run_events rows."""

    projection_name = PROJECTION
    tables = ("run_events",)

    def record(self, tracking: Tracking, e: Any, event: str, data: dict[str, Any], *,
               terminal: bool = False, first: dict[str, str] | None = None) -> None:
        """Store event `e` of a run as SSE `event` with `data`."""
        params = {
            "position": tracking.notification_id, "run_id": e.originator_id,
            "version": e.originator_version, "event": event, "type": _type_of(e),
            "data": Jsonb(_clean(data)), "terminal": terminal, "at": _at(e), **(first or {}),
        }
        self.apply(tracking, [(INSERT_FIRST if first else INSERT_NEXT, params)])


def _type_of(e: Any) -> str:
    return _TYPES[type(e).__name__]


def _at(e: Any) -> datetime:
    """When it happened, by the write side's clock (a submission has its own field)."""
    at = getattr(e, "at", None) or getattr(e, "submitted_at", None)
    return at if isinstance(at, datetime) else e.timestamp


_TYPES = {
    "RunSubmitted": "submitted", "RunStarted": "started", "RunProgressed": "progress",
    "RunLogged": "log", "ArtifactAdded": "artifact", "LineageEdgeRecorded": "lineage",
    "RunCompleted": "completed", "RunFailed": "failed", "RunCancelRequested": "cancel_requested",
    "RunCancelled": "cancelled", "RunRetryScheduled": "retry_scheduled",
}
ARTIFACT_FIELDS = ("artifact_id", "path", "size", "sha256", "content_type", "attempt")
EXTERNAL_FIELDS = ("url", "external")
"""Shown too for an external artifact (its bytes are kept elsewhere, at `url`)."""


def _reported(e: Any, data: dict[str, Any]) -> dict[str, Any]:
    """`data` with the reporter's own `timestamp`, when it gave one (the server's is `at`)."""
    reported_at = getattr(e, "reported_at", None)  # absent from events recorded before it
    return data if reported_at is None else {**data, "timestamp": reported_at}


def _clean(value: Any) -> Any:
    """jsonb refuses NUL and the data must be JSON: one odd value never wedges the projection."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


# eventsourcing bounds a projection's view by TrackingRecorder; a ReadModelView is none (the
# pipeline records its position with the batch it writes in).
class RunEventsProjection(Projection[RunEventsView]):  # type: ignore[type-var]
    """Turns each Run event into the message live streams send."""

    name = PROJECTION

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Other aggregates' events still advance the position."""
        self.view.apply(tracking)

    @process_event.register
    def _(self, e: Run.RunSubmitted, tracking: Tracking) -> None:
        data = {"status": RunStatus.QUEUED.value, "attempt": 1, "job_name": e.job_name,
                "created_by": e.client or e.created_by, "submitted_by": e.created_by,
                "labels": e.labels, "max_retries": e.max_retries,
                "timeout_s": e.timeout_s}
        self.view.record(tracking, e, "status", data,
                         first={"tenant_id": e.tenant_id, "job_type": e.job_type})

    @process_event.register
    def _(self, e: Run.RunStarted, tracking: Tracking) -> None:
        self.view.record(tracking, e, "status", {"status": RunStatus.RUNNING.value, "attempt": e.attempt})

    @process_event.register
    def _(self, e: Run.RunProgressed, tracking: Tracking) -> None:
        self.view.record(tracking, e, "progress",
                         _reported(e, {"percent": e.percent, "message": e.message}))

    @process_event.register
    def _(self, e: Run.RunLogged, tracking: Tracking) -> None:
        self.view.record(tracking, e, "log", _reported(
            e, {"stream": e.stream, "text": e.text, "lines": e.lines, "attempt": e.attempt}))

    @process_event.register
    def _(self, e: Run.ArtifactAdded, tracking: Tracking) -> None:
        shown = {k: e.artifact.get(k) for k in ARTIFACT_FIELDS}
        if e.artifact.get("external"):
            shown.update({k: e.artifact.get(k) for k in EXTERNAL_FIELDS})
        self.view.record(tracking, e, "artifact", _reported(e, shown))

    @process_event.register
    def _(self, e: Run.LineageEdgeRecorded, tracking: Tracking) -> None:
        self.view.record(tracking, e, "lineage",
                         _reported(e, {"source": e.source, "target": e.target}))

    @process_event.register
    def _(self, e: Run.RunCompleted, tracking: Tracking) -> None:
        data = {"status": RunStatus.COMPLETED.value, "summary": e.summary, "exit_code": e.exit_code}
        self.view.record(tracking, e, "status", data, terminal=True)

    @process_event.register
    def _(self, e: Run.RunFailed, tracking: Tracking) -> None:
        retrying = bool(getattr(e, "retrying", False))  # events recorded before the flag: final
        data = {"status": (RunStatus.RUNNING if retrying else RunStatus.FAILED).value, "reason": e.reason,
                "message": e.message, "exit_code": e.exit_code, "retrying": retrying}
        self.view.record(tracking, e, "status", data, terminal=not retrying)

    @process_event.register
    def _(self, e: Run.RunCancelRequested, tracking: Tracking) -> None:
        self.view.record(tracking, e, "status", {"cancel_requested": True, "by": e.by})

    @process_event.register
    def _(self, e: Run.RunCancelled, tracking: Tracking) -> None:
        self.view.record(tracking, e, "status", {"status": RunStatus.CANCELLED.value, "reason": e.reason},
                         terminal=True)

    @process_event.register
    def _(self, e: Run.RunRetryScheduled, tracking: Tracking) -> None:
        data = {"status": RunStatus.QUEUED.value, "attempt": e.attempt, "not_before": e.not_before}
        self.view.record(tracking, e, "status", data)
