"""Lineage identities, and the aggregate OpenLineage reports are recorded on.

A *job* is the stable identity behind repeated runs: for Control Room runs its namespace
is `controlroom` and its name the run's `job_name` (`spec.job_name`, else job type, repo and
entrypoint); for OpenLineage it is the reported job's namespace and name. `job_id` is a
uuid5 of the tenant and that pair, so it never changes across runs or restarts.

OpenLineage events are not runs, yet they belong in the log like every other fact (one
source for the read model, rebuilds and `as_of`): each is recorded on a `LineageJob`
stream whose id is that job's `job_id`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

RUN_JOB_NAMESPACE = "controlroom"
"""Namespace of the jobs behind Control Room's own runs."""


def job_id(tenant_id: str, namespace: str, name: str) -> UUID:
    """The stable id of a tenant's job `namespace`/`name`."""
    return uuid5(NAMESPACE_URL, f"controlroom:job:{tenant_id}:{namespace}:{name}")


RECENT_REPORTS = 1000
"""Reports per job remembered to recognise re-deliveries (clients retry within minutes)."""


def report_key(run_id: str, event_type: str | None, event_time: datetime) -> str:
    """What identifies one OpenLineage run event."""
    return f"{run_id}|{event_type or ''}|{event_time.isoformat()}"


class LineageJob(Aggregate):
    """A job outside Control Room that reports lineage (OpenLineage), one stream per job."""

    class Registered(Aggregate.Created):
        tenant_id: str
        namespace: str
        name: str

    def __init__(self, tenant_id: str, namespace: str, name: str) -> None:
        self.tenant_id = tenant_id
        self.namespace = namespace
        self.name = name
        self.recent: dict[str, None] = {}
        """Keys of the latest reports (oldest first), so that a re-delivery is recognised."""

    @classmethod
    def register(cls, tenant_id: str, namespace: str, name: str) -> LineageJob:
        """A new stream for the job; its id is the job's `job_id`."""
        return cls._create(
            cls.Registered, id=job_id(tenant_id, namespace, name),
            tenant_id=tenant_id, namespace=namespace, name=name,
        )

    def report(
        self, *, run_id: str, event_type: str | None, event_time: datetime,
        inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], producer: str, now: datetime,
    ) -> bool:
        """Record one reported run event: which datasets the run read and wrote.

        False, recording nothing, for a report already recorded: OpenLineage clients retry,
        and an event is identified by its run, type and time.
        """
        if report_key(run_id, event_type, event_time) in self._recent():
            return False
        # The job's identity travels with each event so that a reader needs no other row.
        self._reported(tenant_id=self.tenant_id, job_namespace=self.namespace, job_name=self.name,
                       run_id=run_id, event_type=event_type, event_time=event_time,
                       inputs=inputs, outputs=outputs, producer=producer, at=now)
        return True

    def _recent(self) -> dict[str, None]:
        # Jobs recorded before re-deliveries were recognised have no such attribute yet.
        if not hasattr(self, "recent"):
            self.recent = {}
        return self.recent

    @event("LineageReported")
    def _reported(
        self, tenant_id: str, job_namespace: str, job_name: str, run_id: str,
        event_type: str | None, event_time: datetime, inputs: list[dict[str, Any]],
        outputs: list[dict[str, Any]], producer: str, at: datetime,
    ) -> None:
        recent = self._recent()
        recent[report_key(run_id, event_type, event_time)] = None
        if len(recent) > RECENT_REPORTS:
            del recent[next(iter(recent))]

    if TYPE_CHECKING:
        # Each `@event("...")` method above defines its event class when this class is made,
        # with the method's parameters as its fields. Declared again here, field for field
        # (tests/unit/test_event_declarations.py holds the two together), for type checking.
        class LineageReported(Aggregate.Event):
            tenant_id: str
            job_namespace: str
            job_name: str
            run_id: str
            event_type: str | None
            event_time: datetime
            inputs: list[dict[str, Any]]
            outputs: list[dict[str, Any]]
            producer: str
            at: datetime
