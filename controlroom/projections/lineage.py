"""`lineage` read model: one row per (tenant, source, target, job), from every lineage event.

Edges come from runs (`LineageEdgeRecorded`: job types on success, `::lineage` lines, the
events API, the SDK) and from OpenLineage (`LineageReported` on a `LineageJob` stream: every
input → output pair). Entities are normalised once, here (`validation.uris.lineage_entity`),
so that `supabase://public.orders` and `public.orders` are one node.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from controlroom.domain.lineage.model import RUN_JOB_NAMESPACE, LineageJob, job_id
from controlroom.domain.runs.run import Run
from controlroom.projections.view import ReadModelView
from controlroom.validation.uris import lineage_entity

INSERT_RUN = """
INSERT INTO lineage_runs (run_id, tenant_id, job_id, job_name)
VALUES (%(run_id)s, %(tenant_id)s, %(job_id)s, %(job_name)s) ON CONFLICT DO NOTHING
"""
_UPSERT = """
INSERT INTO lineage_edges AS e (tenant_id, source, target, job_id, job_namespace, job_name,
    source_namespace, target_namespace, first_run_id, last_run_id, first_seen, last_seen,
    first_position, position)
SELECT j.tenant_id, s.source, s.target, j.job_id, j.job_namespace, j.job_name, s.sns, s.tns,
    %(run_id)s, %(run_id)s, %(at)s, %(at)s, %(position)s, %(position)s
FROM ({job}) AS j,
    unnest(%(sources)s::text[], %(targets)s::text[], %(sns)s::text[], %(tns)s::text[])
        AS s(source, target, sns, tns)
ON CONFLICT (tenant_id, source, target, job_id) DO UPDATE SET
    last_run_id = EXCLUDED.last_run_id, last_seen = EXCLUDED.last_seen,
    seen_count = e.seen_count + 1, position = EXCLUDED.position,
    source_namespace = COALESCE(EXCLUDED.source_namespace, e.source_namespace),
    target_namespace = COALESCE(EXCLUDED.target_namespace, e.target_namespace)
"""
UPSERT_RUN_EDGES = _UPSERT.format(job=(
    f"SELECT tenant_id, job_id, '{RUN_JOB_NAMESPACE}'::text AS job_namespace, job_name"
    " FROM lineage_runs WHERE run_id = %(run_id)s::uuid"))
UPSERT_JOB_EDGES = _UPSERT.format(job=(
    "SELECT %(tenant_id)s::text AS tenant_id, %(job_id)s::uuid AS job_id,"
    " %(job_namespace)s::text AS job_namespace, %(job_name)s::text AS job_name"))

Endpoint = tuple[str, str | None]
"""(entity, namespace)"""


def _edge_params(edges: list[tuple[Endpoint, Endpoint]]) -> dict[str, list[Any]]:
    """Column arrays for `unnest`, one entry per distinct (source, target).

    Postgres refuses an upsert that touches the same row twice in one statement.
    """
    unique = {(s[0], t[0]): (s[1], t[1]) for s, t in edges}
    return {"sources": [s for s, _ in unique], "targets": [t for _, t in unique],
            "sns": [n for n, _ in unique.values()], "tns": [n for _, n in unique.values()]}


def dataset_edges(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> list[
        tuple[Endpoint, Endpoint]]:
    """Every input → output pair of an OpenLineage event (entity = dataset name, as given)."""
    ins = [(d["name"], d.get("namespace") or None) for d in inputs]
    outs = [(d["name"], d.get("namespace") or None) for d in outputs]
    return [(i, o) for i in ins for o in outs]


class LineageView(ReadModelView):
    """Writes for the lineage_runs and lineage_edges tables."""

    projection_name = "lineage"
    tables = ("lineage_runs", "lineage_edges")

    def run_submitted(self, tracking: Tracking, **params: Any) -> None:
        """Remember which tenant and job a run belongs to."""
        self.apply(tracking, [(INSERT_RUN, params)])

    def edges(self, tracking: Tracking, sql: str, edges: list[tuple[Endpoint, Endpoint]],
              **params: Any) -> None:
        """Insert or bump the edges of one event."""
        if not edges:
            self.apply(tracking)
            return
        params.update(_edge_params(edges), position=tracking.notification_id)
        self.apply(tracking, [(sql, params)])


# eventsourcing bounds a projection's view by TrackingRecorder; a ReadModelView is none (the
# pipeline records its position with the batch it writes in).
class LineageProjection(Projection[LineageView]):  # type: ignore[type-var]
    """Folds lineage events into lineage_edges."""

    name = "lineage"
    topics = tuple(get_topic(cls) for cls in (
        Run.RunSubmitted, Run.LineageEdgeRecorded, LineageJob.LineageReported))
    """Only these are read from the log: runs' logs and progress never reach this projection."""

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Anything else still advances the position."""
        self.view.apply(tracking)

    @process_event.register
    def _(self, e: Run.RunSubmitted, tracking: Tracking) -> None:
        self.view.run_submitted(
            tracking, run_id=e.originator_id, tenant_id=e.tenant_id, job_name=e.job_name,
            job_id=job_id(e.tenant_id, RUN_JOB_NAMESPACE, e.job_name),
        )

    @process_event.register
    def _(self, e: Run.LineageEdgeRecorded, tracking: Tracking) -> None:
        edge = (lineage_entity(e.source), lineage_entity(e.target))
        self.view.edges(tracking, UPSERT_RUN_EDGES, [edge], run_id=str(e.originator_id), at=e.at)

    @process_event.register
    def _(self, e: LineageJob.LineageReported, tracking: Tracking) -> None:
        self.view.edges(
            tracking, UPSERT_JOB_EDGES, dataset_edges(e.inputs, e.outputs), run_id=e.run_id,
            at=e.at, tenant_id=e.tenant_id, job_id=e.originator_id,
            job_namespace=e.job_namespace, job_name=e.job_name,
        )
