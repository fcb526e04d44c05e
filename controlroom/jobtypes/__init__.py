"""Job types: each a small plugin that plans how one attempt of a run is executed."""

from __future__ import annotations

from collections.abc import Mapping

from controlroom.commands.ports import JobContext, Launch, PlanError
from controlroom.jobtypes.base import JobType
from controlroom.jobtypes.python_entrypoint import PythonEntrypoint


class JobTypes:
    """The registry the worker plans runs with."""

    def __init__(self, types: Mapping[str, JobType]) -> None:
        self.types = dict(types)

    def plan(self, ctx: JobContext) -> Launch:
        """Plan with the run's job type."""
        job_type = self.types.get(ctx.job_type)
        if job_type is None:
            raise PlanError("unknown_job_type", f"no worker support for job type {ctx.job_type!r}")
        return job_type.plan(ctx)


def default_job_types() -> JobTypes:
    """Every job type this release ships."""
    return JobTypes({
        name: PythonEntrypoint(name)
        for name in ("spark_etl", "schema_migration", "diagram_export", "kb_catalog")
    })
