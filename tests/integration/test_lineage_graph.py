"""The lineage graph API: multi-hop walks with cycles, time travel, caps and tenancy.

Edges are recorded through the real paths — a job's `::lineage` lines, and OpenLineage
events posted to `POST /api/v1/lineage` (which answers once the graph shows them).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from litestar.testing import TestClient

from controlroom.domain.lineage.model import job_id
from tests.conftest import job, wait_for_status

GRAPH = "/api/v1/lineage/graph"


def ol_event(inputs: list[str], outputs: list[str], *, job_name: str = "etl",
             run_id: str | None = None) -> dict[str, Any]:
    """An OpenLineage COMPLETE RunEvent reading `inputs` and writing `outputs`."""
    return {
        "eventType": "COMPLETE", "eventTime": datetime.now(UTC).isoformat(),
        "producer": "https://example.com/tests", "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json",
        "run": {"runId": run_id or str(uuid.uuid4()), "facets": {}},
        "job": {"namespace": "airflow", "name": job_name, "facets": {}},
        "inputs": [{"namespace": "warehouse", "name": n, "facets": {}} for n in inputs],
        "outputs": [{"namespace": "warehouse", "name": n} for n in outputs],
    }


def record(client: TestClient[Any], auth: dict[str, str], edges: list[tuple[str, str]],
           job_name: str = "etl") -> None:
    """Record edges as OpenLineage events, one per edge."""
    for source, target in edges:
        r = client.post("/api/v1/lineage", json=ol_event([source], [target], job_name=job_name),
                        headers=auth)
        assert r.status_code == 201, r.text


def graph(client: TestClient[Any], auth: dict[str, str], entity: str, **params: Any) -> dict[str, Any]:
    r = client.get(GRAPH, params={"entity": entity, **params}, headers=auth)
    assert r.status_code == 200, r.text
    return r.json()


def far_ends(items: list[dict[str, Any]]) -> set[tuple[str, int]]:
    return {(i["entity"], i["distance"]) for i in items}


def test_a_jobs_lineage_lines_become_edges_of_its_job_and_run(
        client: TestClient[Any], auth: dict[str, str], tenant: str) -> None:
    source = 'print("::lineage supabase://public.orders warehouse.orders_daily")'
    run = client.post("/api/v1/jobs/run", headers=auth,
                      json=job(source, spec={"job_name": "orders-nightly"})).json()
    assert wait_for_status(client, run["run_id"], auth)["status"] == "completed"
    deadline = time.monotonic() + 10
    while (r := client.get(GRAPH, params={"entity": "public.orders"}, headers=auth)).status_code == 404:
        assert time.monotonic() < deadline, "the edge never reached the graph"
        time.sleep(0.05)
    body = r.json()
    assert body["entity"] == "public.orders" and body["namespace"] == "supabase"
    assert body["upstream"] == []
    [down] = body["downstream"]
    assert down["entity"] == "warehouse.orders_daily"
    assert down["job_id"] == str(job_id(tenant, "controlroom", "orders-nightly"))
    assert down["job_name"] == "orders-nightly" and down["run_id"] == run["run_id"]
    assert "nodes" not in body and "edges" not in body  # only for depth > 1
    # Either form of the entity names the same node.
    assert graph(client, auth, "supabase://Public.Orders")["downstream"] == body["downstream"]


def test_walks_follow_many_hops_and_stop_at_cycles(
        client: TestClient[Any], auth: dict[str, str]) -> None:
    record(client, auth, [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("x", "a")])
    down = graph(client, auth, "a", direction="downstream", depth=10)
    assert far_ends(down["downstream"]) == {("b", 1), ("c", 2), ("a", 3), ("d", 3)}
    assert {n["entity"]: n["distance"] for n in down["nodes"]} == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert {(e["source"], e["target"]) for e in down["edges"]} == {
        ("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}
    assert down["truncated"] is False and down["upstream"] == []

    up = graph(client, auth, "a", direction="upstream", depth=2)
    assert far_ends(up["upstream"]) == {("c", 1), ("x", 1), ("b", 2)}

    both = graph(client, auth, "c", depth=1)
    assert far_ends(both["upstream"]) == {("b", 1)}
    assert far_ends(both["downstream"]) == {("a", 1), ("d", 1)}


def test_as_of_answers_as_the_graph_was_then(client: TestClient[Any], auth: dict[str, str]) -> None:
    before = datetime.now(UTC)
    time.sleep(0.01)
    record(client, auth, [("raw.events", "stage.events")])
    between = datetime.now(UTC)
    time.sleep(0.01)
    record(client, auth, [("stage.events", "mart.daily")])
    record(client, auth, [("raw.events", "stage.events")])  # seen again, later

    now = graph(client, auth, "raw.events", direction="downstream", depth=3)
    assert far_ends(now["downstream"]) == {("stage.events", 1), ("mart.daily", 2)}
    assert now["downstream"][0]["count"] == 2

    then = graph(client, auth, "raw.events", direction="downstream", depth=3,
                 as_of=between.isoformat())
    assert far_ends(then["downstream"]) == {("stage.events", 1)}
    assert then["downstream"][0]["count"] is None  # recorded again later: not known then
    assert then["as_of"] is not None

    empty = graph(client, auth, "raw.events", depth=3, as_of=before.isoformat())
    assert empty["downstream"] == [] and empty["upstream"] == []


def test_results_are_capped_and_say_so(client: TestClient[Any], auth: dict[str, str]) -> None:
    record(client, auth, [("hub", f"leaf_{i}") for i in range(30)])
    full = graph(client, auth, "hub", direction="downstream")
    assert len(full["downstream"]) == 30 and full["truncated"] is False
    capped = graph(client, auth, "hub", direction="downstream", depth=2, limit=10)
    assert capped["truncated"] is True
    assert len(capped["nodes"]) == 10


def test_lineage_of_one_tenant_is_invisible_to_another(
        client: TestClient[Any], token: Callable[..., str]) -> None:
    alice = {"Authorization": f"Bearer {token('tenant-a-' + uuid.uuid4().hex[:6])}"}
    bob = {"Authorization": f"Bearer {token('tenant-b-' + uuid.uuid4().hex[:6])}"}
    record(client, alice, [("shared.name", "alice.secret")])
    r = client.get(GRAPH, params={"entity": "shared.name"}, headers=bob)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    record(client, bob, [("shared.name", "bob.table")])
    assert far_ends(graph(client, bob, "shared.name")["downstream"]) == {("bob.table", 1)}
    assert far_ends(graph(client, alice, "shared.name")["downstream"]) == {("alice.secret", 1)}


def test_scopes_and_bad_parameters(client: TestClient[Any], tenant: str,
                                   token: Callable[..., str], auth: dict[str, str]) -> None:
    reader = {"Authorization": f"Bearer {token(tenant, scopes=['runs:read'])}"}
    assert client.get(GRAPH, params={"entity": "a.b"}, headers=reader).status_code == 403
    r = client.post("/api/v1/lineage", json=ol_event(["a"], ["b"]), headers=reader)
    assert r.status_code == 403
    record(client, auth, [("p.q", "r.s")])
    for bad in ({"depth": 0}, {"depth": 101}, {"limit": 0}, {"direction": "sideways"},
                {"as_of": "yesterday"}):
        r = client.get(GRAPH, params={"entity": "p.q", **bad}, headers=auth)
        assert r.status_code == 400, (bad, r.text)
    assert client.get(GRAPH, headers=auth).status_code == 400  # entity is required


def test_openlineage_bodies_are_checked(client: TestClient[Any], auth: dict[str, str]) -> None:
    r = client.post("/api/v1/lineage", content=b"{not json",
                    headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 400
    r = client.post("/api/v1/lineage", json={"eventType": "START"}, headers=auth)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "eventTime"
    event = ol_event([f"in_{i}" for i in range(200)], [f"out_{i}" for i in range(51)])
    assert client.post("/api/v1/lineage", json=event, headers=auth).status_code == 422
    # A START naming no outputs, and a DatasetEvent, record nothing but are accepted.
    start = ol_event(["only.inputs"], [])
    assert client.post("/api/v1/lineage", json=start, headers=auth).json()["edges"] == 0
    dataset_event = {"eventTime": datetime.now(UTC).isoformat(), "producer": "x",
                     "dataset": {"namespace": "n", "name": "d"}}
    assert client.post("/api/v1/lineage", json=dataset_event, headers=auth).status_code == 201


def test_a_redelivered_openlineage_event_is_counted_once(
    client: TestClient[Any], auth: dict[str, str],
) -> None:
    event = ol_event(["retry.src"], ["retry.dst"], job_name="retrying")
    for _ in range(3):  # a client retrying after a lost response
        r = client.post("/api/v1/lineage", json=event, headers=auth)
        assert r.status_code == 201 and r.json()["edges"] == 1
    [edge] = graph(client, auth, "retry.dst", direction="upstream")["upstream"]
    assert edge["count"] == 1
    later = ol_event(["retry.src"], ["retry.dst"], job_name="retrying", run_id=event["run"]["runId"])
    assert client.post("/api/v1/lineage", json=later, headers=auth).status_code == 201
    [edge] = graph(client, auth, "retry.dst", direction="upstream")["upstream"]
    assert edge["count"] == 2  # another event of the same run (a later time) is new
