"""The API's lineage reads: an in-memory graph per tenant, kept current from `lineage_edges`.

Built at start-up in the background (streamed through a cursor, yielding to the event loop
between batches), then caught up with `WHERE position > cursor`: before a query when the
projection has announced a newer position (LISTEN, through the ProjectionWaiter), and by
polling every POLL_INTERVAL_S otherwise. Walks never touch the database; `as_of` is
answered from the first/last-seen times kept per edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from controlroom.adapters.lineage.index import Direction, TenantGraph

log = logging.getLogger("controlroom.lineage")

PROJECTION = "lineage"
POLL_INTERVAL_S = 1.0
READY_TIMEOUT_S = 10.0
"""A query waits this long for the first build before it is answered 503."""
FETCH_ROWS = 10_000
FREEZE_ABOVE_EDGES = 100_000
"""A first build this large is frozen out of the garbage collector's sight (gc.freeze)."""
COLUMNS = """tenant_id, source, target, job_id::text, job_namespace, job_name, source_namespace,
    target_namespace, first_run_id, last_run_id, extract(epoch FROM first_seen)::float8,
    extract(epoch FROM last_seen)::float8, seen_count, first_position, position"""
CHANGED = f"SELECT {COLUMNS} FROM lineage_edges WHERE position > $1"


class LineageNotReadyError(ConnectionError):
    """The lineage graph is still being built (answered like an unavailable database)."""


@dataclass
class GraphAnswer:
    """A walk rendered to plain values: nodes are (entity, namespace, distance)."""

    entity: str
    namespace: str | None
    upstream: list[tuple[tuple[Any, ...], int]]
    downstream: list[tuple[tuple[Any, ...], int]]
    nodes: list[tuple[str, str | None, int]]
    edges: list[tuple[Any, ...]]
    truncated: bool


class LineageGraph:
    """Lineage graph queries for every tenant of this process."""

    def __init__(self, pool: asyncpg.Pool, waiter: Any = None) -> None:
        self.pool = pool
        self.waiter = waiter
        self.graphs: dict[str, TenantGraph] = {}
        self.position = 0
        self.announced = 0
        self.resets = 0
        self.ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin building the graph in the background."""
        self._task = asyncio.create_task(self._keep_current(), name="lineage-graph")

    async def stop(self) -> None:
        """Stop keeping the graph current."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _keep_current(self) -> None:
        while True:
            try:
                await self.catch_up()
                if not self.ready.is_set():
                    if self.size()[1] >= FREEZE_ABOVE_EDGES:
                        # Millions of long-lived objects would make every full collection walk
                        # them (~100 ms pauses, the p99 of big queries): out of its sight.
                        gc.collect()
                        gc.freeze()
                    self.ready.set()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("lineage graph could not catch up: %s", e)
            await asyncio.sleep(POLL_INTERVAL_S)

    async def catch_up(self) -> None:
        """Apply every edge row changed since the last catch-up."""
        async with self._lock:
            resets = self._resets()
            if resets != self.resets:  # a rebuild emptied lineage_edges: reload as it refills
                self.graphs, self.position, self.announced, self.resets = {}, 0, 0, resets
            start, newest = self.position, self.position
            announced = self._announced()
            async with self.pool.acquire() as conn, conn.transaction(
                    isolation="repeatable_read", readonly=True):
                cursor = await conn.cursor(CHANGED, start)
                while rows := await cursor.fetch(FETCH_ROWS):
                    for r in rows:
                        graph = self.graphs.get(r[0])
                        if graph is None:
                            graph = self.graphs[r[0]] = TenantGraph()
                        # Rows first written after the previous snapshot can't be in the graph.
                        graph.upsert(r[1:13], new=r[13] > start)
                        newest = max(newest, r[14])
                    await asyncio.sleep(0)  # let requests through between batches
            self.position = newest
            self.announced = max(self.announced, announced)

    def _resets(self) -> int:
        resets = getattr(self.waiter, "resets", None)
        return resets.get(PROJECTION, 0) if resets else 0

    def _announced(self) -> int:
        positions = getattr(self.waiter, "positions", None)
        return positions.get(PROJECTION, 0) if positions else 0

    async def _fresh(self) -> None:
        try:
            await asyncio.wait_for(self.ready.wait(), READY_TIMEOUT_S)
        except TimeoutError:
            raise LineageNotReadyError("the lineage graph is still loading") from None
        if self._announced() > self.announced:
            await self.catch_up()

    async def query(
        self, tenant_id: str, entity: str, *, direction: Direction, depth: int,
        as_of: float | None, max_nodes: int, max_edges: int,
    ) -> GraphAnswer | None:
        """The walk from `entity`; None if the tenant has never recorded it."""
        await self._fresh()
        graph = self.graphs.get(tenant_id)
        root = graph.node_of.get(entity) if graph is not None else None
        if graph is None or root is None:
            return None
        walk = graph.walk(root, direction=direction, depth=depth, as_of=as_of,
                          max_nodes=max_nodes, max_edges=max_edges)
        names, namespaces = graph.names, graph.namespaces
        rendered = graph.render((e for e, _ in (*walk.upstream, *walk.downstream)), as_of)
        return GraphAnswer(
            entity=entity, namespace=namespaces[root],
            upstream=[(rendered[e], d) for e, d in walk.upstream],
            downstream=[(rendered[e], d) for e, d in walk.downstream],
            nodes=[(names[n], namespaces[n], d) for n, d in walk.nodes.items()],
            edges=list(rendered.values()), truncated=walk.truncated,
        )

    def size(self) -> tuple[int, int]:
        """(nodes, edges) held, all tenants together."""
        return (sum(len(g.names) for g in self.graphs.values()),
                sum(len(g) for g in self.graphs.values()))
