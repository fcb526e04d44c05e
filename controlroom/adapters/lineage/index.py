"""An in-memory lineage graph of one tenant, and the bounded walk that answers graph queries.

Compact on purpose (a million edges must fit an API process): entities, jobs and run ids
are interned once; per edge there are eight machine numbers in `array`s (40 bytes); each
node's in- and out-lists are `array('i')` of edge numbers, created on first use. A walk
is a breadth-first search per direction with a visited set (cycle-safe), stopped by
`depth` or by the node / edge caps — then `truncated` is set.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from sys import intern
from typing import Any, Literal

Direction = Literal["upstream", "downstream", "both"]
EdgeRow = tuple[Any, ...]
"""(source, target, job_id, job_namespace, job_name, source_ns, target_ns,
first_run, last_run, first_seen, last_seen, count)"""


@dataclass
class Walk:
    """What a walk reached: edge numbers with their hop distance, per direction."""

    root: int
    upstream: list[tuple[int, int]] = field(default_factory=list)
    downstream: list[tuple[int, int]] = field(default_factory=list)
    nodes: dict[int, int] = field(default_factory=dict)
    truncated: bool = False


class TenantGraph:
    """One tenant's lineage edges, indexed both ways."""

    def __init__(self) -> None:
        self.node_of: dict[str, int] = {}
        self.names: list[str] = []
        self.namespaces: list[str | None] = []
        self.out: list[array[int] | None] = []
        self.into: list[array[int] | None] = []
        self.jobs: list[tuple[str, str, str]] = []
        self._job_of: dict[str, int] = {}
        self.runs: list[str] = []
        self._run_of: dict[str, int] = {}
        self.src, self.dst, self.job = array("i"), array("i"), array("i")
        self.first_run, self.last_run = array("i"), array("i")
        self.first_seen, self.last_seen = array("d"), array("d")
        self.count = array("q")

    def __len__(self) -> int:
        return len(self.src)

    def _node(self, name: str, namespace: str | None) -> int:
        n = self.node_of.get(name)
        if n is None:
            n = self.node_of[name] = len(self.names)
            self.names.append(name)
            self.namespaces.append(namespace)
            self.out.append(None)
            self.into.append(None)
        elif namespace is not None:
            self.namespaces[n] = namespace  # the latest wins
        return n

    def _run(self, run_id: str) -> int:
        r = self._run_of.get(run_id)
        if r is None:
            r = self._run_of[run_id] = len(self.runs)
            self.runs.append(run_id)
        return r

    def _job(self, jid: str, namespace: str, name: str) -> int:
        j = self._job_of.get(jid)
        if j is None:
            j = self._job_of[jid] = len(self.jobs)
            self.jobs.append((jid, namespace, name))
        return j

    def upsert(self, row: EdgeRow, *, new: bool) -> None:
        """Add an edge (`new`), or bring an existing one up to date."""
        source, target, jid, jns, jname, sns, tns, first, last, t0, t1, count = row
        # A handful of namespaces repeat across a million rows: keep one copy of each.
        jns, sns, tns = intern(jns), sns and intern(sns), tns and intern(tns)
        s, t, j = self._node(source, sns), self._node(target, tns), self._job(jid, jns, jname)
        e = -1 if new else self._find(s, t, j)
        if e < 0:
            e = len(self.src)
            for column, value in ((self.src, s), (self.dst, t), (self.job, j),
                                  (self.first_run, self._run(first)), (self.first_seen, t0)):
                column.append(value)
            self.last_run.append(0)
            self.last_seen.append(0.0)
            self.count.append(0)
            self._link(self.out, s, e)
            self._link(self.into, t, e)
        self.last_run[e] = self._run(last)
        self.last_seen[e] = t1
        self.count[e] = count

    @staticmethod
    def _link(lists: list[array[int] | None], n: int, e: int) -> None:
        edges = lists[n]
        if edges is None:
            edges = lists[n] = array("i")
        edges.append(e)

    def _find(self, s: int, t: int, j: int) -> int:
        outs, ins = self.out[s] or (), self.into[t] or ()
        if len(outs) <= len(ins):
            return next((e for e in outs if self.dst[e] == t and self.job[e] == j), -1)
        return next((e for e in ins if self.src[e] == s and self.job[e] == j), -1)

    def walk(self, root: int, *, direction: Direction, depth: int, as_of: float | None,
             max_nodes: int, max_edges: int) -> Walk:
        """Edges reachable from `root` within `depth` hops, up to the caps."""
        result = Walk(root, nodes={root: 0})
        if direction in ("upstream", "both"):
            self._bfs(result, result.upstream, self.into, self.src, depth, as_of, max_nodes, max_edges)
        if direction in ("downstream", "both") and not result.truncated:
            self._bfs(result, result.downstream, self.out, self.dst, depth, as_of, max_nodes,
                      max_edges)
        return result

    def _bfs(self, result: Walk, found: list[tuple[int, int]], adjacency: list[array[int] | None],
             far: array[int], depth: int, as_of: float | None, max_nodes: int,
             max_edges: int) -> None:
        nodes, first_seen = result.nodes, self.first_seen
        seen, frontier = {result.root}, [result.root]
        taken = len(result.upstream) + len(result.downstream)
        for distance in range(1, depth + 1):
            following: list[int] = []
            for u in frontier:
                for e in adjacency[u] or ():
                    if as_of is not None and first_seen[e] > as_of:
                        continue
                    v = far[e]
                    if v not in nodes:
                        if len(nodes) >= max_nodes:
                            result.truncated = True
                            return
                        nodes[v] = distance
                    if taken >= max_edges:
                        result.truncated = True
                        return
                    found.append((e, distance))
                    taken += 1
                    if v not in seen:
                        seen.add(v)
                        following.append(v)
            if not following:
                return
            frontier = following

    def render(self, edges: Iterable[int], as_of: float | None) -> dict[int, tuple[Any, ...]]:
        """Each edge once, as (source, target, job_id, job_name, run_id, first_seen,
        last_seen, count, source namespace, target namespace).

        As of a time before its last recording, the run, last_seen and count shown are
        those of its first recording (count unknown: None).
        """
        names, namespaces, jobs, runs = self.names, self.namespaces, self.jobs, self.runs
        src, dst, job, first_seen, last_seen = self.src, self.dst, self.job, self.first_seen, self.last_seen
        times: dict[float, datetime] = {}  # a job's edges share their times: convert once

        def when(t: float) -> datetime:
            d = times.get(t)
            if d is None:
                d = times[t] = datetime.fromtimestamp(t, UTC)
            return d

        out: dict[int, tuple[Any, ...]] = {}
        for e in edges:
            if e in out:
                continue
            jid, _, jname = jobs[job[e]]
            t0, t1 = first_seen[e], last_seen[e]
            if as_of is not None and t1 > as_of:
                run, t1, count = self.first_run[e], t0, None
            else:
                run, count = self.last_run[e], self.count[e]
            s, t = src[e], dst[e]
            out[e] = (names[s], names[t], jid, jname, runs[run], when(t0), when(t1), count,
                      namespaces[s], namespaces[t])
        return out
