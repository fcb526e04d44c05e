"""Request and response bodies of the v1 API (msgspec; snake_case as in the PRD)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from controlroom.api.runs.event_bodies import EventEnvelope

JobType = Literal["spark_etl", "schema_migration", "diagram_export", "kb_catalog"]
Path = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
Label = Annotated[str, msgspec.Meta(max_length=256)]
MAX_FILES = 1000
MAX_TIMEOUT_S = 7 * 24 * 3600
MAX_RETRIES = 10


class CodeFile(msgspec.Struct, forbid_unknown_fields=True):
    """One source file of the job."""

    path: Path
    content: str


class Code(msgspec.Struct, forbid_unknown_fields=True):
    """The job's code: inline files, optionally where they came from."""

    files: Annotated[list[CodeFile], msgspec.Meta(min_length=1, max_length=MAX_FILES)]
    repo: str | None = None
    ref: str | None = None


class Repo(msgspec.Struct, forbid_unknown_fields=True):
    """The PRD's top-level `repo`: where the code came from (the same as `code.repo` / `code.ref`)."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    ref: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None


Role = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Inputs = list[str] | dict[Role, str]
"""A list of URIs read, or the PRD's object of role → URI (`target` written, other roles read)."""


class Spec(msgspec.Struct):
    """The natural-language spec and how to run it; unknown keys are kept as given."""

    text: str | None = None
    """The PRD's name for the natural-language description."""
    description: str | None = None
    """The same as `text` (its earlier name); both are returned."""
    entrypoint: Path | None = None
    job_name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    dry_run: bool = False
    secrets: dict[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = {}
    inputs: Inputs = []
    outputs: list[str] = []
    executor: Literal["local", "kubernetes"] | None = None
    """Where to run it; unset: the deployment's default (`CONTROLROOM_EXECUTOR`)."""
    network: Literal["none"] | None = None
    """`none`: a local job runs with no network (only its own loopback); unset: the worker's
    setting (`CONTROLROOM_JOB_NETWORK`). A run can cut its network, never open it."""


class Callbacks(msgspec.Struct, forbid_unknown_fields=True):
    """Where to call back when the run changes state."""

    on_complete: str | None = None
    on_fail: str | None = None
    on_start: str | None = None
    on_progress: str | None = None


class JobSubmission(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/v1/jobs/run (a field outside it is refused by name; `spec` keeps any key)."""

    job_type: JobType
    code: Code
    spec: Spec = msgspec.field(default_factory=Spec)
    callbacks: Callbacks = msgspec.field(default_factory=Callbacks)
    timeout_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_TIMEOUT_S)] = 3600
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=MAX_RETRIES)] = 0
    labels: dict[Label, Label] = {}
    created_by: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    """The client that submitted (`continue-ide-plugin`); kept beside the token's subject."""
    repo: Repo | None = None


EventBatch = EventEnvelope | Annotated[list[EventEnvelope], msgspec.Meta(min_length=1)]
"""The PRD's form of what the events route accepts, as documented (api/runs/event_bodies.py also
takes each event flat: `{"event_type": "progress", "percent": 40}`; docs/api.md)."""
"""At most MAX_EVENTS_PER_REQUEST, checked by the route (a 422 naming the limit)."""


class Progress(msgspec.Struct):
    """The latest progress report of the current attempt."""

    percent: float | None
    message: str | None
    updated_at: datetime | None


class RunError(msgspec.Struct):
    """Why the run (or its last attempt) failed."""

    reason: str
    message: str | None


class Artifact(msgspec.Struct):
    """A file the run produced (`path` is relative to the job's `output/` dir)."""

    path: str
    url: str
    """Where its bytes are: our `/content` link, or for an external artifact its own URL."""
    artifact_id: str
    size: int | None
    """Null only for an external artifact whose reporter didn't say."""
    sha256: str | None
    """Null only for an external artifact whose reporter didn't say."""
    content_type: str
    attempt: int
    external: bool = False
    """Registered by reference: the bytes are kept elsewhere, at `url`."""


class ArtifactView(msgspec.Struct):
    """GET /api/v1/artifacts/{artifact_id} — an artifact's metadata."""

    path: str
    url: str
    """Where its bytes are: our `/content` link, or for an external artifact its own URL."""
    artifact_id: str
    run_id: str
    attempt: int
    size: int | None
    sha256: str | None
    content_type: str
    created_at: datetime
    external: bool = False
    """Registered by reference: the bytes are kept elsewhere, at `url`."""


class ArtifactPage(msgspec.Struct):
    """GET /api/v1/artifacts — a page of the tenant's artifacts, newest first."""

    artifacts: list[ArtifactView]
    next_cursor: str | None


class RunView(msgspec.Struct):
    """GET /api/v1/runs/{run_id} — the PRD fields first, then extensions."""

    run_id: str
    job_type: str
    status: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    artifacts: list[Artifact]
    logs_url: str
    progress: Progress | None
    job_name: str
    created_by: str
    """The client the submission named (`created_by`), else the token's subject."""
    submitted_by: str
    """The token's subject: who submitted, as authenticated."""
    repo: Repo | None
    attempt: int
    max_retries: int
    timeout_s: int
    labels: dict[str, str]
    spec: dict[str, Any]
    callbacks: dict[str, str]
    cancel_requested: bool
    exit_code: int | None
    summary: str | None
    error: RunError | None
    next_attempt_at: datetime | None
    updated_at: datetime
    log_lines: int
    events_url: str
    visible: bool = True
    """False: the run is recorded (durable) but reads don't show it yet; this view comes from its
    log, without progress, artifacts, log lines or error until it is visible."""


class RunPage(msgspec.Struct):
    """GET /api/v1/runs — a page of runs and the cursor of the next one."""

    runs: list[RunView]
    next_cursor: str | None


class Accepted(msgspec.Struct):
    """Acknowledgement of reported events: they are in the run's log (durable), which read
    models may not show yet (docs/api.md "Reading your own events back")."""

    run_id: str
    status: str
    """The run's status once these events were recorded (from its log)."""
    accepted: int = 0
    last_event_id: int = 0
    """The id of the last event recorded, on the run's event stream (`GET /runs/{id}/events`):
    a page or an SSE stream shows this request's events once it reaches this id."""
