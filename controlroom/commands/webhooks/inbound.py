"""Outcomes an external runner reports (POST /webhooks/continue), recorded through the run commands.

A queued run that an external runner reports on is started first (as that runner), so its
events read like any other run's; whatever the state machine forbids — completing a cancelled
run — raises its DomainError and nothing is recorded.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

import msgspec

from controlroom.commands.errors import RunNotFoundError
from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.artifacts.external import external_artifact
from controlroom.domain.errors import InvalidTransitionError
from controlroom.domain.lineage.data_flow import lineage_edges
from controlroom.domain.runs.run import QUEUED, RUNNING
from controlroom.domain.runs.status import RunStatus

REPORTED_FAILURE = "reported"
"""`error.reason` of a failure an external runner reported without a reason of its own."""

Status = Literal["running", "completed", "failed", "cancelled"]


class ExternalArtifact(msgspec.Struct, frozen=True):
    """An artifact kept elsewhere: where to fetch it, and what the runner knows of it."""

    path: str
    url: str
    content_type: str | None = None
    size: int | None = None
    sha256: str | None = None


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What the runner says happened to the run's current attempt."""

    status: Status
    summary: str = ""
    artifacts: list[ExternalArtifact] = []
    attempt: int | None = None
    reason: str | None = None
    exit_code: int | None = None


class InboundOutcomes:
    """Applies reported outcomes with the same commands workers use."""

    def __init__(self, runs: RunCommands) -> None:
        self.runs = runs

    def report(self, tenant_id: str, run_id: UUID, outcome: Outcome, *, by: str) -> int:
        """Record `outcome` on the tenant's run; returns the position of the last event written."""
        run = self.runs.load(run_id)
        if run.tenant_id != tenant_id:
            raise RunNotFoundError(run_id)
        attempt = outcome.attempt or run.attempt
        position = 0
        if outcome.status == RunStatus.CANCELLED.value:
            position = self.runs.request_cancel(tenant_id, run_id, by)
            if self.runs.load(run_id).status == RUNNING:
                position = self.runs.confirm_cancelled(run_id, outcome.summary or f"cancelled by {by}",
                                                       attempt=attempt)
            return position
        if run.status == QUEUED:
            position = self.runs.start(run_id, attempt, f"external:{by}")
        if outcome.status == RunStatus.RUNNING.value:
            if run.status not in (QUEUED, RUNNING):
                raise InvalidTransitionError("start", run.status)
            return position
        if outcome.artifacts:
            position = self.runs.add_artifacts(run_id, [external_artifact(
                run_id, attempt, path=a.path, url=a.url, content_type=a.content_type, size=a.size,
                sha256=a.sha256) for a in outcome.artifacts], attempt=attempt)
        if outcome.status == RunStatus.COMPLETED.value:
            if edges := lineage_edges(run.spec):  # as a worker records them on success
                self.runs.lineage(run_id, edges, attempt=attempt)
            return self.runs.complete(run_id, summary=outcome.summary, exit_code=outcome.exit_code,
                                      attempt=attempt)
        return self.runs.fail(run_id, reason=outcome.reason or REPORTED_FAILURE,
                              message=outcome.summary, exit_code=outcome.exit_code, attempt=attempt)
