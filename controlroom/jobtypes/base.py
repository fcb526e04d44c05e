"""What a job type is: what it demands of a job before it runs, and how it runs one attempt."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from controlroom.commands.ports import JobContext, Launch, PlanError
from controlroom.validation import JobRules


class JobType(Protocol):
    """A kind of job: what pre-flight validation demands of it, and how a run becomes a process."""

    @property
    def name(self) -> str:
        """The `job_type` a submission names."""

    @property
    def rules(self) -> JobRules:
        """Read by pre-flight validation (`POST /api/v1/jobs/validate` and every submission)."""

    def plan(self, ctx: JobContext) -> Launch: ...


def entrypoint_of(files: Iterable[str], spec: dict[str, Any]) -> str | None:
    """`spec.entrypoint` if it is one of the files, else the first Python file."""
    paths = list(files)
    chosen = spec.get("entrypoint")
    if chosen:
        return chosen if chosen in paths else None
    return next((p for p in paths if p.endswith(".py")), None)


def require_entrypoint(ctx: JobContext) -> str:
    """The entrypoint, or a PlanError the run fails with."""
    entry = entrypoint_of(ctx.files, ctx.spec)
    if entry is None:
        raise PlanError(
            "no_entrypoint",
            "no entrypoint: set spec.entrypoint to one of the code files, or include a .py file",
        )
    return entry
