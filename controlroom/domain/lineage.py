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
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

RUN_JOB_NAMESPACE = "controlroom"
"""Namespace of the jobs behind Control Room's own runs."""


def job_id(tenant_id: str, namespace: str, name: str) -> UUID:
    """The stable id of a tenant's job `namespace`/`name`."""
    return uuid5(NAMESPACE_URL, f"controlroom:job:{tenant_id}:{namespace}:{name}")


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
    ) -> None:
        """Record one reported run event: which datasets the run read and wrote."""
        # The job's identity travels with each event so that a reader needs no other row.
        self._reported(tenant_id=self.tenant_id, job_namespace=self.namespace, job_name=self.name,
                       run_id=run_id, event_type=event_type, event_time=event_time,
                       inputs=inputs, outputs=outputs, producer=producer, at=now)

    @event("LineageReported")
    def _reported(
        self, tenant_id: str, job_namespace: str, job_name: str, run_id: str,
        event_type: str | None, event_time: datetime, inputs: list[dict[str, Any]],
        outputs: list[dict[str, Any]], producer: str, at: datetime,
    ) -> None:
        pass
