"""Listing a tenant's runs: filters by status, job type and creator, and cursor pagination."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.conftest import job, wait_for_status

PROBLEM_JSON = "application/problem+json"
RUNS = "/api/v1/runs"


def submit(client: TestClient[Any], headers: dict[str, str], body: dict[str, Any]) -> str:
    resp = client.post("/api/v1/jobs/run", json=body, headers=headers)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


def listed(client: TestClient[Any], headers: dict[str, str], **params: Any) -> list[str]:
    resp = client.get(RUNS, headers=headers, params=params)
    assert resp.status_code == 200, resp.text
    return [r["run_id"] for r in resp.json()["runs"]]


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def assert_problem(resp: Any) -> None:
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)
    assert resp.json()["detail"]


def test_runs_can_be_filtered_by_status_job_type_and_creator(
    client: TestClient[Any], tenant: str, token: Callable[..., str]
) -> None:
    alice = {"Authorization": f"Bearer {token(tenant, sub='alice')}"}
    bob = {"Authorization": f"Bearer {token(tenant, sub='bob')}"}
    a_done = submit(client, alice, job("print('ok')"))
    a_failed = submit(client, alice, job("raise SystemExit(1)", job_type="kb_catalog"))
    b_done = submit(client, bob, {"job_type": "diagram_export",
                                  "code": {"files": [{"path": "g.dot", "content": "digraph { a -> b }"}]}})
    for run_id in (a_done, a_failed, b_done):
        wait_for_status(client, run_id, alice)

    assert set(listed(client, alice)) == {a_done, a_failed, b_done}
    assert set(listed(client, alice, status="completed")) == {a_done, b_done}
    assert listed(client, alice, status="failed") == [a_failed]
    assert listed(client, alice, status="running") == []
    assert listed(client, alice, job_type="kb_catalog") == [a_failed]
    assert listed(client, alice, job_type="diagram_export") == [b_done]
    assert listed(client, bob, created_by="bob") == [b_done]
    assert set(listed(client, bob, created_by="alice")) == {a_done, a_failed}
    assert listed(client, alice, created_by="alice", status="completed", job_type="spark_etl") == [a_done]
    assert listed(client, alice, created_by="nobody") == []


def test_an_unknown_status_filter_is_rejected(client: TestClient[Any], auth: dict[str, str]) -> None:
    assert_problem(client.get(RUNS, headers=auth, params={"status": "exploded"}))


def test_pages_of_runs_come_newest_first_without_gaps_or_repeats(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    submitted = [submit(client, auth, job(f"print({i})")) for i in range(7)]
    pages: list[list[str]] = []
    cursor: str | None = None
    for _ in range(4):
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        resp = client.get(RUNS, headers=auth, params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        pages.append([r["run_id"] for r in page["runs"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert cursor is None
    flat = [run_id for p in pages for run_id in p]
    assert flat == list(reversed(submitted))
    for run_id in submitted:
        wait_for_status(client, run_id, auth)


def test_a_page_that_ends_exactly_at_the_last_run_has_no_next_cursor(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    submitted = [submit(client, auth, job("pass")) for _ in range(2)]
    page = client.get(RUNS, headers=auth, params={"limit": 2}).json()
    assert [r["run_id"] for r in page["runs"]] == list(reversed(submitted))
    assert page["next_cursor"] is None
    for run_id in submitted:
        wait_for_status(client, run_id, auth)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!",
        b64("hello"),
        b64("2024-01-01T00:00:00+00:00|not-a-uuid"),
        b64(f"yesterday|{uuid.uuid4()}"),
        b64(f"2024-01-01T00:00:00|{uuid.uuid4()}"),
        b64(f"0001-01-01T00:00:00+01:00|{uuid.uuid4()}"),
        b64(f"9999-12-31T23:59:59-01:00|{uuid.uuid4()}"),
    ],
)
def test_a_cursor_the_api_did_not_issue_is_rejected(
    client: TestClient[Any], auth: dict[str, str], cursor: str
) -> None:
    assert_problem(client.get(RUNS, headers=auth, params={"cursor": cursor}))


@pytest.mark.parametrize("limit", [0, -1, 1000, "many"])
def test_a_limit_outside_one_to_two_hundred_is_rejected(
    client: TestClient[Any], auth: dict[str, str], limit: Any
) -> None:
    assert_problem(client.get(RUNS, headers=auth, params={"limit": limit}))
