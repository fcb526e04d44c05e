"""GET /api/v1/lineage/graph: what an entity was made from and what was made from it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, get
from litestar.params import FromQuery, QueryParameter

from controlroom.api.auth import Principal, requires
from controlroom.api.deps import Deps, LineageReadsPort
from controlroom.api.problems import ProblemError
from controlroom.api.views import API
from controlroom.validation.uris import lineage_entity

DEFAULT_LIMIT = 5_000
MAX_LIMIT = 50_000
EDGES_PER_NODE = 2
"""Edges returned are capped at this many times the node cap."""
MAX_DEPTH = 100


class LineageLink(msgspec.Struct):
    """One edge seen from the queried side: `entity` is its far end."""

    entity: str
    job_id: str
    run_id: str
    namespace: str | None
    job_name: str
    distance: int
    first_seen: datetime
    last_seen: datetime
    count: int | None


class LineageNode(msgspec.Struct):
    """An entity the walk reached, `distance` hops from the queried one."""

    entity: str
    namespace: str | None
    distance: int


class LineageEdge(msgspec.Struct):
    """A recorded edge: `job_id` read `source` and wrote `target` (last in run `run_id`)."""

    source: str
    target: str
    job_id: str
    job_name: str
    run_id: str
    first_seen: datetime
    last_seen: datetime
    count: int | None


class LineageGraphView(msgspec.Struct, omit_defaults=True):
    """The PRD shape `{entity, upstream, downstream}`, extended; graph lists for depth > 1."""

    entity: str
    upstream: list[LineageLink]
    downstream: list[LineageLink]
    namespace: str | None
    direction: str
    depth: int
    truncated: bool
    as_of: datetime | None = None
    nodes: list[LineageNode] | None = None
    edges: list[LineageEdge] | None = None


def _links(found: list[tuple[tuple[Any, ...], int]], far: int) -> list[LineageLink]:
    return [LineageLink(e[far], e[2], e[4], e[8 + far], e[3], d, e[5], e[6], e[7])
            for e, d in found]


def _reads(deps: Deps) -> LineageReadsPort:
    if deps.lineage is None:
        raise RuntimeError("no LineageReadsPort was given to Deps")
    return deps.lineage


@get(f"{API}/lineage/graph", guards=[requires("lineage:read")])
async def lineage_graph(
    request: Request[Principal, str, Any],
    entity: Annotated[str, QueryParameter(min_length=1, max_length=1024)],
    direction: FromQuery[Literal["upstream", "downstream", "both"]] = "both",
    depth: Annotated[int, QueryParameter(ge=1, le=MAX_DEPTH)] = 1,
    as_of: FromQuery[datetime | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> LineageGraphView:
    """Upstream and downstream of `entity` (`schema.table` or a URI), `depth` hops out.

    `as_of` answers as the graph was then; at most `limit` nodes (and twice as many edges)
    are returned, with `truncated` set when the walk was cut short.
    """
    deps: Deps = request.app.state.deps
    name, _ = lineage_entity(entity)
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)  # a bare timestamp is read as UTC
    answer = await _reads(deps).query(
        request.user.tenant_id, name, direction=direction, depth=depth,
        as_of=as_of.timestamp() if as_of is not None else None,
        max_nodes=limit, max_edges=limit * EDGES_PER_NODE,
    )
    if answer is None:
        raise ProblemError(404, "Entity not found", f"no lineage has been recorded for {name!r}")
    view = LineageGraphView(
        entity=answer.entity, namespace=answer.namespace, direction=direction, depth=depth,
        as_of=as_of, truncated=answer.truncated,
        upstream=_links(answer.upstream, 0), downstream=_links(answer.downstream, 1),
    )
    if depth > 1:
        view.nodes = [LineageNode(*n) for n in answer.nodes]
        view.edges = [LineageEdge(*e[:8]) for e in answer.edges]
    return view
