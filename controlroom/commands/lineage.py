"""Recording OpenLineage reports: each on the stream of the job it is about."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controlroom.commands.application import ControlRoom
from controlroom.commands.runs.handlers import Clock, utcnow
from controlroom.commands.updates import or_created, update
from controlroom.domain.lineage.model import LineageJob, job_id


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
        def decide(job: LineageJob) -> None:
            job.report(run_id=run_id, event_type=event_type, event_time=event_time,
                       inputs=inputs, outputs=outputs, producer=producer, now=self.clock())

        _, position = update(
            self.app, job_id(tenant_id, job_namespace, job_name), decide,
            load=or_created(self.app, lambda: LineageJob.register(tenant_id, job_namespace, job_name)),
            name=f"job {job_namespace}/{job_name}")
        return position or 0
