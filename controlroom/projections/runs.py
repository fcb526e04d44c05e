"""`run_status` read model: one row per run, plus its log chunks and artifacts, from the Run stream."""

from __future__ import annotations

from typing import Any

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from psycopg.types.json import Jsonb

from controlroom.domain.runs.run import Run
from controlroom.projections.view import ReadModelView

INSERT_RUN = """
INSERT INTO run_status (run_id, tenant_id, job_type, job_name, created_by, submitted_by, status,
    max_retries, timeout_s, labels, spec, secret_names, idempotency_key, repo, callbacks,
    created_at, updated_at, last_position)
VALUES (%(run_id)s, %(tenant_id)s, %(job_type)s, %(job_name)s, %(created_by)s, %(submitted_by)s,
    'queued', %(max_retries)s, %(timeout_s)s, %(labels)s, %(spec)s, %(secret_names)s,
    %(idempotency_key)s, %(repo)s, %(callbacks)s, %(at)s, %(at)s, %(position)s)
ON CONFLICT (run_id) DO NOTHING
"""

_TOUCH = "updated_at = %(at)s, last_position = %(position)s, event_count = event_count + 1"


def _update(assignments: str) -> str:
    sep = ", " if assignments else ""
    return f"UPDATE run_status SET {assignments}{sep}{_TOUCH} WHERE run_id = %(run_id)s"


STARTED = _update(
    "status = 'running', started_at = %(at)s, attempt = %(attempt)s, "
    "progress_percent = NULL, progress_message = NULL, progress_at = NULL, "
    "error_reason = NULL, error_message = NULL, exit_code = NULL"
)
"""A new attempt owns the row: the previous attempt's error stays only in the run's events."""
PROGRESSED = _update(
    "progress_percent = COALESCE(%(percent)s, progress_percent), "
    "progress_message = %(message)s, progress_at = %(at)s"
)
LOGGED = f"""
WITH run AS ({_update("log_lines = log_lines + %(lines)s")} RETURNING tenant_id)
INSERT INTO run_log_chunks (run_id, position, tenant_id, attempt, stream, text, lines, logged_at)
SELECT %(run_id)s, %(position)s, tenant_id, %(attempt)s, %(stream)s, %(text)s, %(lines)s, %(at)s
FROM run
ON CONFLICT DO NOTHING
"""
"""A log chunk and its count on the run in one statement: a burst of lines is one statement
repeated, which the view sends as one batch."""
COMPLETED = _update(
    "status = 'completed', completed_at = %(at)s, summary = %(summary)s, exit_code = %(exit_code)s, "
    "progress_percent = 100, error_reason = NULL, error_message = NULL"
)
"""Cleared here too, so that a completion never shows an earlier attempt's error."""
FAILED = _update(
    "status = 'failed', completed_at = %(at)s, error_reason = %(reason)s, "
    "error_message = %(message)s, exit_code = %(exit_code)s"
)
ATTEMPT_FAILED = _update(
    "error_reason = %(reason)s, error_message = %(message)s, exit_code = %(exit_code)s"
)
"""A failure with a retry to follow: never show a transient terminal `failed`."""
CANCEL_REQUESTED = _update("cancel_requested = true")
CANCELLED = _update("status = 'cancelled', completed_at = %(at)s, summary = %(reason)s")
RETRY_SCHEDULED = _update(
    "status = 'queued', attempt = %(attempt)s, next_attempt_at = %(not_before)s, "
    "cancel_requested = false, started_at = NULL, completed_at = NULL"
)
TOUCHED = _update("")
ARTIFACT_ADDED = _update("artifacts = artifacts || %(shown)s")
INSERT_ARTIFACT = """
INSERT INTO artifacts (artifact_id, tenant_id, run_id, attempt, path, size, sha256, content_type,
    created_at, position, url)
SELECT %(artifact_id)s, tenant_id, %(run_id)s, %(attempt)s, %(path)s, %(size)s, %(sha256)s,
    %(content_type)s, %(at)s, %(position)s, %(url)s
FROM run_status WHERE run_id = %(run_id)s
ON CONFLICT DO NOTHING
"""
ARTIFACT_SHOWN = ("artifact_id", "path", "size", "sha256", "content_type", "attempt", "url")
"""An artifact in the run's `artifacts`; `url` only for an external one (bytes kept elsewhere)."""


def _repo(code: dict[str, Any]) -> Jsonb | None:
    """`{url, ref}` of where the code came from (`code.repo` / `code.ref`), if it says."""
    if not code.get("repo"):
        return None
    return Jsonb({"url": code["repo"], "ref": code.get("ref")})


class RunStatusView(ReadModelView):
    """Writes for the run_status, run_log_chunks and artifacts tables."""

    projection_name = "run_status"
    tables = ("run_status", "run_log_chunks", "artifacts")

    def change(self, sql: str, tracking: Tracking, **params: Any) -> None:
        """Apply one statement with the event's run id and position filled in."""
        params.setdefault("position", tracking.notification_id)
        self.apply(tracking, [(sql, params)])

    def log(self, tracking: Tracking, **params: Any) -> None:
        """Store a log chunk and count its lines on the run."""
        params["position"] = tracking.notification_id
        self.apply(tracking, [(LOGGED, params)])


# eventsourcing bounds a projection's view by TrackingRecorder; a ReadModelView is none (the
# pipeline records its position with the batch it writes in).
class RunStatusProjection(Projection[RunStatusView]):  # type: ignore[type-var]
    """Folds every Run event into its run_status row."""

    name = "run_status"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Events this read model doesn't show still advance its position."""
        self.view.apply(tracking)

    @process_event.register
    def _(self, e: Run.RunSubmitted, tracking: Tracking) -> None:
        self.view.change(
            INSERT_RUN, tracking, run_id=e.originator_id, tenant_id=e.tenant_id,
            job_type=e.job_type, job_name=e.job_name, created_by=e.client or e.created_by,
            submitted_by=e.created_by, max_retries=e.max_retries, timeout_s=e.timeout_s,
            labels=Jsonb(e.labels), spec=Jsonb(e.spec),
            secret_names=sorted(e.spec.get("secret_names", [])),
            idempotency_key=e.idempotency_key, repo=_repo(e.code), callbacks=Jsonb(e.callbacks),
            at=e.submitted_at,
        )

    @process_event.register
    def _(self, e: Run.RunStarted, tracking: Tracking) -> None:
        self.view.change(STARTED, tracking, run_id=e.originator_id, at=e.at, attempt=e.attempt)

    @process_event.register
    def _(self, e: Run.RunProgressed, tracking: Tracking) -> None:
        self.view.change(
            PROGRESSED, tracking, run_id=e.originator_id, at=e.at, percent=e.percent,
            message=e.message,
        )

    @process_event.register
    def _(self, e: Run.RunLogged, tracking: Tracking) -> None:
        self.view.log(
            tracking, run_id=e.originator_id, at=e.at, attempt=e.attempt, stream=e.stream,
            text=e.text, lines=e.lines,
        )

    @process_event.register
    def _(self, e: Run.RunCompleted, tracking: Tracking) -> None:
        self.view.change(
            COMPLETED, tracking, run_id=e.originator_id, at=e.at, summary=e.summary,
            exit_code=e.exit_code,
        )

    @process_event.register
    def _(self, e: Run.RunFailed, tracking: Tracking) -> None:
        self.view.change(
            ATTEMPT_FAILED if getattr(e, "retrying", False) else FAILED, tracking,
            run_id=e.originator_id, at=e.at, reason=e.reason, message=e.message,
            exit_code=e.exit_code,
        )

    @process_event.register
    def _(self, e: Run.RunCancelRequested, tracking: Tracking) -> None:
        self.view.change(CANCEL_REQUESTED, tracking, run_id=e.originator_id, at=e.at)

    @process_event.register
    def _(self, e: Run.RunCancelled, tracking: Tracking) -> None:
        self.view.change(CANCELLED, tracking, run_id=e.originator_id, at=e.at, reason=e.reason)

    @process_event.register
    def _(self, e: Run.RunRetryScheduled, tracking: Tracking) -> None:
        self.view.change(
            RETRY_SCHEDULED, tracking, run_id=e.originator_id, at=e.at, attempt=e.attempt,
            not_before=e.not_before,
        )

    @process_event.register
    def _(self, e: Run.ArtifactAdded, tracking: Tracking) -> None:
        a = e.artifact
        external = bool(a.get("external")) and isinstance(a.get("url"), str)
        params = {
            "run_id": e.originator_id, "at": e.at, "position": tracking.notification_id,
            "artifact_id": a.get("artifact_id"), "attempt": a.get("attempt", 1),
            "path": a.get("path"), "size": a.get("size", None if external else 0),
            "sha256": a.get("sha256"), "url": a["url"] if external else None,
            "content_type": a.get("content_type") or "application/octet-stream",
        }
        # An event missing what the table requires is shown as a touch, never a stuck projection.
        required = ("artifact_id", "path") if external else ("artifact_id", "path", "sha256")
        if not all(params[k] is not None for k in required):
            self.view.change(TOUCHED, tracking, **params)
            return
        shown = {k: params[k] for k in ARTIFACT_SHOWN}
        self.view.apply(tracking, [(INSERT_ARTIFACT, params),
                                   (ARTIFACT_ADDED, {**params, "shown": Jsonb([shown])})])

    @process_event.register
    def _(self, e: Run.LineageEdgeRecorded, tracking: Tracking) -> None:
        self.view.change(TOUCHED, tracking, run_id=e.originator_id, at=e.at)
