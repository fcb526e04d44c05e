"""Job types: each a small plugin that plans how one attempt of a run is executed."""

from __future__ import annotations

from collections.abc import Mapping

from controlroom.commands.errors import ConnectionNotFoundError
from controlroom.commands.ports import Connections, JobContext, Launch, PlanError
from controlroom.jobtypes.base import JobType
from controlroom.jobtypes.diagram_export import DiagramExport
from controlroom.jobtypes.kb_catalog import KbCatalog
from controlroom.jobtypes.schema_migration import SchemaMigration
from controlroom.jobtypes.spark_etl import SparkEtl
from controlroom.validation import JobRules


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

    def rules(self) -> dict[str, JobRules]:
        """What pre-flight validation demands of each job type."""
        return {name: t.rules for name, t in self.types.items()}


class NoConnections:
    """Stands in where no connection store is wired: every lookup misses."""

    def dsn(self, tenant_id: str, name: str) -> str:
        """Always ConnectionNotFoundError."""
        raise ConnectionNotFoundError(name)

    def names(self, tenant_id: str) -> list[str]:
        """None."""
        return []


def default_job_types(connections: Connections | None = None) -> JobTypes:
    """Every job type this release ships; `connections` resolves table URIs to DSNs."""
    conns = connections or NoConnections()
    types: list[JobType] = [
        SparkEtl(conns), SchemaMigration(conns), DiagramExport(), KbCatalog(conns),
    ]
    return JobTypes({t.name: t for t in types})
