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


class Progress(msgspec.Struct, frozen=True, tag_field="event_type", tag="progress", kw_only=True):
    """Report progress on a run."""

    percent: Percent | None = None
    message: Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE)] = ""


class Log(msgspec.Struct, frozen=True, tag_field="event_type", tag="log", kw_only=True):
    """Append log output to a run."""

    text: Annotated[str, msgspec.Meta(max_length=MAX_LOG_TEXT)]
    stream: Literal["stdout", "stderr", "system"] = "stdout"


Entity = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class Lineage(msgspec.Struct, frozen=True, tag_field="event_type", tag="lineage", kw_only=True):
    """Record that the run read `source` and wrote `target` (URIs or schema.table)."""

    source: Entity
    target: Entity


RunEvent = Progress | Log | Lineage


class Submitted(msgspec.Struct, frozen=True):
    """What a submission produced: the run and its position in the log."""

    run_id: UUID
    position: int
    created: bool
    submitted_at: datetime
