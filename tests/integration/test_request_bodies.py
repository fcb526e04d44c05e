"""Every JSON body the API decodes passes one gate: bounded nesting, a JSON Content-Type."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from litestar.testing import TestClient

from controlroom.api.gate.json_body import MAX_DEPTH, nested_deeper_than
from tests.conftest import job

PROBLEM_JSON = "application/problem+json"
JSON = {"Content-Type": "application/json"}
DEEP = b"[" * 50_000 + b"]" * 50_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000


def problem(resp: Any, status: int) -> dict[str, Any]:
    """The response is a problem document with this status, and no traceback."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].split(";")[0] == PROBLEM_JSON
    assert "Traceback" not in resp.text and "RecursionError" not in resp.text
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["detail"].strip()
    return body


def nested(depth: int) -> bytes:
    """A JSON object whose `run_id` sits beside an array nested `depth` deep."""
    return b'{"run_id": "x", "deep": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_deep_json_to_the_unauthenticated_continue_hook_is_a_400_not_a_500(
        client: TestClient[Any]) -> None:
    for body in (DEEP, DEEP_OBJECT):
        resp = client.post("/api/v1/webhooks/continue", content=body, headers=JSON)
        assert "nested too deeply" in problem(resp, 400)["detail"]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/v1/jobs/run"), ("POST", "/api/v1/jobs/validate"),
    ("POST", "/api/v1/webhooks/subscriptions"), ("POST", "/api/v1/api-keys"),
    ("PUT", "/api/v1/connections/warehouse"), ("POST", "/api/v1/lineage"),
    ("POST", "/api/v1/webhooks/continue"),
])
def test_every_json_route_refuses_deep_nesting_with_a_400(
        client: TestClient[Any], auth: dict[str, str], method: str, path: str) -> None:
    resp = client.request(method, path, content=DEEP, headers={**auth, **JSON})
    problem(resp, 400)


def test_a_gzipped_lineage_event_is_checked_once_inflated(
        client: TestClient[Any], auth: dict[str, str]) -> None:
    resp = client.post("/api/v1/lineage", content=gzip.compress(DEEP),
                       headers={**auth, **JSON, "Content-Encoding": "gzip"})
    assert "nested too deeply" in problem(resp, 400)["detail"]


def test_nesting_at_the_limit_passes_the_gate(client: TestClient[Any], auth: dict[str, str]) -> None:
    resp = client.post("/api/v1/webhooks/continue", content=nested(MAX_DEPTH), headers=JSON)
    assert "nested too deeply" not in resp.text  # the gate let it through; run_id is refused
    resp = client.post("/api/v1/webhooks/continue", content=nested(MAX_DEPTH + 1), headers=JSON)
    assert "nested too deeply" in problem(resp, 400)["detail"]
    ok = client.post("/api/v1/jobs/run", content=json.dumps(job("print(1)")), headers={**auth, **JSON})
    assert ok.status_code == 202, ok.text


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"a": "[" * 1000, "b": "\\\"{" * 500, "c": [[[]]]}).encode()
    assert not nested_deeper_than(text, 4)
    assert nested_deeper_than(text, 3)
    assert nested_deeper_than(b"[" * 66 + b"]" * 66, MAX_DEPTH)


@pytest.mark.parametrize("content_type", [
    None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "application/json; charset=latin-1", "text/json",
])
def test_a_json_route_refuses_a_body_of_another_type_with_a_415(
        client: TestClient[Any], auth: dict[str, str], content_type: str | None) -> None:
    body = json.dumps(job("print(1)")).encode()
    headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
    for path in ("/api/v1/jobs/run", "/api/v1/jobs/validate"):
        resp = client.post(path, content=body, headers=headers)
        answer = problem(resp, 415)
        assert answer["errors"][0]["field"] == "Content-Type", answer
        assert "application/json" in answer["detail"]
    assert client.get("/api/v1/runs", headers=auth).json()["runs"] == []  # nothing was submitted


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
    "application/vnd.controlroom+json",
])
def test_json_content_types_are_accepted(
        client: TestClient[Any], auth: dict[str, str], content_type: str) -> None:
    resp = client.post("/api/v1/jobs/run", content=json.dumps(job("print(1)")).encode(),
                       headers={**auth, "Content-Type": content_type})
    assert resp.status_code == 202, resp.text


def test_a_route_without_a_body_needs_no_content_type(
        client: TestClient[Any], auth: dict[str, str]) -> None:
    run_id = client.post("/api/v1/jobs/run", json=job("import time\ntime.sleep(60)"),
                         headers=auth).json()["run_id"]
    resp = client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth)
    assert resp.status_code == 202, resp.text


def test_the_unauthenticated_continue_hook_refuses_a_form_body(client: TestClient[Any]) -> None:
    resp = client.post("/api/v1/webhooks/continue", content=b"run_id=x&status=completed",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    problem(resp, 415)
