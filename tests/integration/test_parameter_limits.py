"""Query and path parameters PostgreSQL can't take are refused by name, never a 500.

Found by schemathesis: a NUL byte in a string parameter, and integers past bigint (or, for a
run's event versions, past int4) reached the database and failed there.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.conftest import job, wait_for_status

BIG = 2**63
NUL_PARAMS = [
    ("/api/v1/runs", "created_by"), ("/api/v1/runs", "job_type"), ("/api/v1/runs", "cursor"),
    ("/api/v1/events", "job_type"), ("/api/v1/events", "event_type"),
    ("/api/v1/lineage/graph", "entity"),
]


def assert_names(resp: Any, status: int, field: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in resp.json()["errors"]] == [field], resp.json()


@pytest.mark.parametrize(("path", "name"), NUL_PARAMS)
def test_a_nul_byte_in_a_query_parameter_is_a_400_naming_it(
        client: TestClient[Any], auth: dict[str, str], path: str, name: str) -> None:
    assert_names(client.get(path, params={name: "a\x00b"}, headers=auth), 400, name)


def test_a_nul_byte_in_a_path_parameter_is_a_400_naming_it(
        client: TestClient[Any], auth: dict[str, str]) -> None:
    for method in ("GET", "PUT", "DELETE"):
        resp = client.request(method, "/api/v1/connections/ab%00c", headers=auth, json={"dsn": "x"})
        assert_names(resp, 400, "name")


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/runs/{run}/events"])
def test_after_beyond_bigint_is_a_400_naming_it_and_the_largest_bigint_an_empty_page(
        client: TestClient[Any], auth: dict[str, str], path: str) -> None:
    run_id = client.post("/api/v1/jobs/run", json=job("print(1)\n"), headers=auth).json()["run_id"]
    wait_for_status(client, run_id, auth)
    url = path.format(run=run_id)
    for after in (BIG, 10**30, "9" * 5000):
        assert_names(client.get(url, params={"after": str(after)}, headers=auth), 400, "after")
    page = client.get(url, params={"after": str(BIG - 1)}, headers=auth)
    assert page.status_code == 200, page.text
    assert page.json()["events"] == [] and page.json()["last_event_id"] == BIG - 1
    # past int4: a run's event versions are int4, the query compares them as bigint
    page = client.get(url, params={"after": str(2**31)}, headers=auth)
    assert page.status_code == 200 and page.json()["events"] == [], page.text


def test_replay_from_beyond_bigint_is_a_400_naming_it(
        client: TestClient[Any], auth: dict[str, str]) -> None:
    path = f"/api/v1/webhooks/subscriptions/{uuid.uuid4()}/replay"
    assert_names(client.post(path, params={"from": str(BIG)}, headers=auth), 400, "from")


def test_openlineage_strings_with_nul_are_refused_by_field(
        client: TestClient[Any], auth: dict[str, str]) -> None:
    event = {"eventTime": "2024-01-01T00:00:00Z", "producer": "p",
             "job": {"namespace": "ns\x00", "name": "j"}, "run": {"runId": "r"},
             "inputs": [{"namespace": "a", "name": "b"}], "outputs": [{"namespace": "c", "name": "d"}]}
    assert_names(client.post("/api/v1/lineage", json=event, headers=auth), 422, "job.namespace")
