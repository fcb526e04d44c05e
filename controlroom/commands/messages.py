"""Commands accepted by the write side (plain structs, decoded at the API boundary)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec


class SubmitJob(msgspec.Struct, frozen=True, kw_only=True):
    """Submit a job for execution."""

    tenant_id: str
    created_by: str
    """The token's subject."""
    client: str | None = None
    """The body's `created_by`: the client that submitted, as it names itself."""
    job_type: str
    code: dict[str, Any]
    spec: dict[str, Any]
    secrets: dict[str, str]
    timeout_s: int
    max_retries: int
    labels: dict[str, str]
    callbacks: dict[str, str]
    job_name: str
    request_hash: str
    idempotency_key: str | None = None


MAX_LOG_TEXT = 1024 * 1024
MAX_MESSAGE = 4096

Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
ReportedAt = datetime | None
"""`timestamp`: when the client says it happened (its clock); the server's time is kept too."""


class ProgressFields(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a progress report says (the `data` of its envelope)."""

    percent: Percent | None = None
    message: Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE)] = ""
    timestamp: ReportedAt = None


class Progress(ProgressFields, frozen=True, tag_field="event_type", tag="progress"):
    """Report progress on a run."""


class LogFields(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a log report says (the `data` of its envelope)."""

    text: Annotated[str, msgspec.Meta(max_length=MAX_LOG_TEXT)]
    stream: Literal["stdout", "stderr", "system"] = "stdout"
    timestamp: ReportedAt = None


class Log(LogFields, frozen=True, tag_field="event_type", tag="log"):
    """Append log output to a run."""


Entity = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class LineageFields(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a lineage report says (the `data` of its envelope): URIs or schema.table."""

    source: Entity
    target: Entity
    timestamp: ReportedAt = None


class Lineage(LineageFields, frozen=True, tag_field="event_type", tag="lineage"):
    """Record that the run read `source` and wrote `target`."""


ArtifactPath = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
ArtifactUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class ArtifactFields(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An external artifact: its path in the run, its URL, and what the reporter knows of it."""

    path: ArtifactPath
    url: ArtifactUrl
    content_type: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    size: Annotated[int, msgspec.Meta(ge=0)] | None = None
    sha256: Annotated[str, msgspec.Meta(min_length=64, max_length=64)] | None = None
    timestamp: ReportedAt = None


class Artifact(ArtifactFields, frozen=True, tag_field="event_type", tag="artifact"):
    """Register an external artifact: a file kept elsewhere (e.g. an object store)."""


RunEvent = Progress | Log | Artifact | Lineage
EVENT_TYPES = ("progress", "log", "artifact", "lineage")
"""The `event_type`s a client may report."""


class Submitted(msgspec.Struct, frozen=True):
    """What a submission produced: the run and its position in the log."""

    run_id: UUID
    position: int
    created: bool
    submitted_at: datetime


class Recorded(msgspec.Struct, frozen=True):
    """What reporting events produced: the last one's position in the log and its version in
    the run (its id on the run's event stream), and the run's status after them."""

    position: int
    version: int
    status: str
