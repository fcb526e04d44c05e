"""Job types: each a small plugin that plans how one attempt of a run is executed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from controlroom.commands.errors import ConnectionNotFoundError
from controlroom.commands.ports import Connections, JobContext, Launch, PlanError
from controlroom.domain.lineage.data_flow import lineage_edges
from controlroom.jobtypes.base import JobType
from controlroom.jobtypes.diagram_export import DiagramExport
from controlroom.jobtypes.kb_catalog import KbCatalog
from controlroom.jobtypes.schema_migration import SchemaMigration
from controlroom.jobtypes.spark_etl import SparkEtl
from controlroom.validation import JobRules, UriError, parse_uri


class JobTypes:
    """The registry the worker plans runs with."""

    def __init__(self, types: Mapping[str, JobType]) -> None:
        self.types = dict(types)

    def plan(self, ctx: JobContext) -> Launch:
        """Plan with the run's job type; whatever its type, the data flow its spec declares
        (`spec.inputs` → `spec.outputs`) is recorded as lineage when it succeeds."""
        job_type = self.types.get(ctx.job_type)
        if job_type is None:
            raise PlanError("unknown_job_type", f"no worker support for job type {ctx.job_type!r}")
        launch = job_type.plan(ctx)
        declared = [(canonical(s), canonical(t)) for s, t in lineage_edges(ctx.spec)]
        edges = [*launch.lineage_on_success, *((s, t) for s, t in declared if s != t)]
        return replace(launch, lineage_on_success=list(dict.fromkeys(edges)))

    def rules(self) -> dict[str, JobRules]:
        """What pre-flight validation demands of each job type."""
        return {name: t.rules for name, t in self.types.items()}


def canonical(text: str) -> str:
    """A table URI as lineage records it (`Supabase://Public.Orders` → `Supabase://public.orders`),
    so one table declared two ways is one edge; anything else as given."""
    try:
        return parse_uri(text, table_required=False).uri
    except UriError:
        return text


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
