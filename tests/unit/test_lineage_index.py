"""The in-memory lineage graph, entity names, and byte ranges: pure functions, no database."""

from __future__ import annotations

import pytest

from controlroom.adapters.lineage.index import TenantGraph
from controlroom.api.artifacts.routes import byte_range
from controlroom.api.problems import ProblemError
from controlroom.validation.uris import lineage_entity


def _graph(*edges: tuple[str, str], at: float = 100.0) -> TenantGraph:
    g = TenantGraph()
    for source, target in edges:
        g.upsert((source, target, "job-1", "ns", "job", None, None, "run-1", "run-1", at, at, 1),
                 new=True)
    return g


def test_entities_fold_table_uris_and_keep_everything_else_whole() -> None:
    assert lineage_entity("supabase://Public.Orders") == ("public.orders", "supabase")
    assert lineage_entity(' "Sales"."Q3" ') == ("Sales.Q3", None)
    assert lineage_entity("catalog://warehouse%20docs") == ("catalog://warehouse%20docs", "catalog")
    assert lineage_entity("s3://bucket/key.parquet") == ("s3://bucket/key.parquet", "s3")


def test_an_existing_edge_is_updated_in_place() -> None:
    g = _graph(("a", "b"))
    g.upsert(("a", "b", "job-1", "ns", "job", "wh", None, "run-1", "run-2", 100.0, 200.0, 2),
             new=False)
    assert len(g) == 1
    walk = g.walk(g.node_of["a"], direction="downstream", depth=1, as_of=None,
                  max_nodes=10, max_edges=10)
    [(e, _)] = walk.downstream
    assert g.render([e], None)[e][4:8:3] == ("run-2", 2)
    then = g.render([e], 150.0)[e]
    assert then[4] == "run-1" and then[7] is None and then[5] == then[6]
    assert g.namespaces[g.node_of["a"]] == "wh"


def test_walks_are_cycle_safe_and_capped() -> None:
    g = _graph(("a", "b"), ("b", "a"), ("b", "c"), ("c", "d"), ("d", "e"))
    walk = g.walk(g.node_of["a"], direction="both", depth=50, as_of=None,
                  max_nodes=100, max_edges=100)
    assert not walk.truncated and len(walk.nodes) == 5
    capped = g.walk(g.node_of["a"], direction="downstream", depth=50, as_of=None,
                    max_nodes=3, max_edges=100)
    assert capped.truncated and len(capped.nodes) == 3
    few_edges = g.walk(g.node_of["a"], direction="downstream", depth=50, as_of=None,
                       max_nodes=100, max_edges=2)
    assert few_edges.truncated and len(few_edges.downstream) == 2
    assert g.walk(g.node_of["a"], direction="upstream", depth=1, as_of=99.0, max_nodes=9,
                  max_edges=9).upstream == []


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("bytes=0-9", (0, 9)), ("bytes=90-", (90, 99)), ("bytes=-10", (90, 99)),
    ("bytes=-500", (0, 99)), ("bytes=50-5000", (50, 99)), ("bytes=0-1,4-5", None),
    ("items=0-1", None), ("bytes=9-3", None), ("bytes=x-y", None), ("bytes=-", None),
])
def test_byte_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=-0", "bytes=250-300"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(ProblemError) as e:
        byte_range(header, 100)
    assert e.value.status == 416 and e.value.headers["Content-Range"] == "bytes */100"
