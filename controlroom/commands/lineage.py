"""Recording OpenLineage reports: each on the stream of the job it is about."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from controlroom.commands.application import ControlRoom
from controlroom.commands.errors import ConcurrencyError
from controlroom.commands.handlers import Clock, utcnow
from controlroom.domain.lineage import LineageJob, job_id

MAX_CONFLICT_RETRIES = 8


class LineageCommands:
    """Write side of lineage reported from outside Control Room's own runs."""

    def __init__(self, app: ControlRoom, *, clock: Clock = utcnow) -> None:
        self.app = app
        self.clock = clock

    def report(
        self, tenant_id: str, *, job_namespace: str, job_name: str, run_id: str,
        event_type: str | None, event_time: datetime, inputs: list[dict[str, Any]],
        outputs: list[dict[str, Any]], producer: str,
    ) -> int:
        """Record one OpenLineage run event; its position in the log (0: a re-delivery, kept once)."""
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                job: LineageJob = self.app.repository.get(job_id(tenant_id, job_namespace, job_name))
            except AggregateNotFoundError:
                job = LineageJob.register(tenant_id, job_namespace, job_name)
            if not job.report(run_id=run_id, event_type=event_type, event_time=event_time,
                              inputs=inputs, outputs=outputs, producer=producer, now=self.clock()):
                return 0
            try:
                recordings = self.app.save(job)
            except IntegrityError:
                continue  # the same job reported concurrently: append after it
            return recordings[-1].notification.id
        raise ConcurrencyError(f"job {job_namespace}/{job_name} is reporting too fast; try again")
