"""Read-model rows → response structs, and the list cursor format."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import msgspec

from controlroom.api.problems import invalid
from controlroom.api.schemas import Artifact, ArtifactView, Progress, Repo, RunError, RunView
from controlroom.commands.messages import SubmitJob
from controlroom.domain.runs.run import Run
from controlroom.domain.runs.status import RunStatus

API = "/api/v1"
_decode_obj = msgspec.json.Decoder(dict[str, Any])
_decode_str_map = msgspec.json.Decoder(dict[str, str])
_decode_repo = msgspec.json.Decoder(Repo | None)
TEXT_ALIASES = ("text", "description")
"""One field under two names (the PRD's and the earlier one): a spec shows both."""


class Row(Protocol):
    """A read-model row: its columns by name (an asyncpg Record, which is no Mapping, or a dict)."""

    def __getitem__(self, column: str, /) -> Any: ...


def spec_view(spec: dict[str, Any]) -> dict[str, Any]:
    """A run's spec as returned: as submitted, with `text` and `description` both shown."""
    given = next((spec[k] for k in TEXT_ALIASES if spec.get(k) is not None), None)
    return spec if given is None else {**spec, **dict.fromkeys(TEXT_ALIASES, given)}


def repo_of(code: dict[str, Any]) -> Repo | None:
    """The PRD's `repo {url, ref}` of a submission's `code`."""
    return Repo(code["repo"], code.get("ref")) if code.get("repo") else None


class _ArtifactRow(msgspec.Struct):
    artifact_id: str
    path: str
    size: int | None
    sha256: str | None
    content_type: str
    attempt: int
    url: str | None = None
    """Set for an external artifact only."""


_decode_artifacts = msgspec.json.Decoder(list[_ArtifactRow])


def artifact_url(artifact_id: object) -> str:
    """Where an artifact's bytes are downloaded."""
    return f"{API}/artifacts/{artifact_id}/content"


def _artifact(a: _ArtifactRow) -> Artifact:
    return Artifact(path=a.path, url=a.url or artifact_url(a.artifact_id),
                    artifact_id=a.artifact_id, size=a.size, sha256=a.sha256,
                    content_type=a.content_type, attempt=a.attempt, external=a.url is not None)


def artifact_view(row: Row) -> ArtifactView:
    """The public shape of one artifacts row (an external one's `url` is where it is kept)."""
    aid = str(row["artifact_id"])
    external = row["url"]
    return ArtifactView(
        path=row["path"], url=external or artifact_url(aid), artifact_id=aid,
        run_id=str(row["run_id"]), attempt=row["attempt"], size=row["size"],
        sha256=row["sha256"], content_type=row["content_type"], created_at=row["created_at"],
        external=external is not None,
    )


def run_view(row: Row) -> RunView:
    """The public shape of one run_status row."""
    run_id = str(row["run_id"])
    progress = None
    if row["progress_at"] is not None or row["status"] == RunStatus.COMPLETED:
        progress = Progress(row["progress_percent"], row["progress_message"], row["progress_at"])
    error = RunError(row["error_reason"], row["error_message"]) if row["error_reason"] else None
    return RunView(
        run_id=run_id,
        job_type=row["job_type"],
        status=row["status"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        artifacts=[_artifact(a) for a in _decode_artifacts.decode(row["artifacts"])],
        logs_url=f"{API}/runs/{run_id}/logs",
        progress=progress,
        job_name=row["job_name"],
        created_by=row["created_by"],
        submitted_by=row["submitted_by"],
        repo=_decode_repo.decode(row["repo"]) if row["repo"] else None,
        attempt=row["attempt"],
        max_retries=row["max_retries"],
        timeout_s=row["timeout_s"],
        labels=_decode_str_map.decode(row["labels"]),
        spec=spec_view(_decode_obj.decode(row["spec"])),
        callbacks=_decode_str_map.decode(row["callbacks"]),
        cancel_requested=row["cancel_requested"],
        exit_code=row["exit_code"],
        summary=row["summary"],
        error=error,
        next_attempt_at=row["next_attempt_at"],
        updated_at=row["updated_at"],
        log_lines=row["log_lines"],
        events_url=f"{API}/runs/{run_id}/events",
    )


def encode_cursor(created_at: datetime, run_id: UUID) -> str:
    """An opaque cursor pointing just after this run."""
    raw = f"{created_at.isoformat()}|{run_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, run_id) a cursor points after; 422 if it's not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, rid = raw.partition("|")
        created_at = datetime.fromisoformat(at)
        if created_at.tzinfo is None:
            raise ValueError("cursor time has no offset")
        # out-of-range instants (year 1 / 9999 with an offset) would fail in the query
        return created_at.astimezone(UTC), UUID(rid)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise invalid("cursor", "not a cursor returned by this API") from None


def accepted_view(
    run_id: UUID, cmd: SubmitJob, created_at: datetime, *, visible: bool = True
) -> RunView:
    """A run as its submission created it: the answer to a submit (no second read needed)."""
    rid = str(run_id)
    return RunView(
        run_id=rid, job_type=cmd.job_type, status=RunStatus.QUEUED.value, created_at=created_at,
        started_at=None, completed_at=None, artifacts=[], logs_url=f"{API}/runs/{rid}/logs",
        progress=None, job_name=cmd.job_name, created_by=cmd.client or cmd.created_by,
        submitted_by=cmd.created_by, repo=repo_of(cmd.code), attempt=1,
        max_retries=cmd.max_retries, timeout_s=cmd.timeout_s, labels=cmd.labels,
        spec=spec_view(cmd.spec), callbacks=cmd.callbacks, cancel_requested=False,
        exit_code=None, summary=None, error=None, next_attempt_at=None,
        updated_at=created_at, log_lines=0, events_url=f"{API}/runs/{rid}/events",
        visible=visible,
    )


def logged_view(run: Run) -> RunView:
    """A run as its log says, for when the read model hasn't shown it yet (`visible: false`).

    The log's aggregate keeps status, attempt and timestamps, not progress, artifacts, the log
    or the error: those read as empty until the run is visible.
    """
    rid = str(run.id)
    queued = run.status == RunStatus.QUEUED
    return RunView(
        run_id=rid, job_type=run.job_type, status=run.status, created_at=run.submitted_at,
        started_at=run.started_at, completed_at=run.finished_at, artifacts=[],
        logs_url=f"{API}/runs/{rid}/logs", progress=None, job_name=run.job_name,
        created_by=run.client or run.created_by, submitted_by=run.created_by,
        repo=repo_of(run.code), attempt=run.attempt, max_retries=run.max_retries,
        timeout_s=run.timeout_s, labels=run.labels, spec=spec_view(run.spec),
        callbacks=run.callbacks, cancel_requested=run.cancel_requested, exit_code=None,
        summary=None, error=None, next_attempt_at=run.not_before if queued else None,
        updated_at=run.finished_at or run.started_at or run.submitted_at, log_lines=0,
        events_url=f"{API}/runs/{rid}/events", visible=False,
    )
