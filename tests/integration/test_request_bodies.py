"""Every JSON body the API decodes passes one gate: bounded nesting, a JSON Content-Type."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from litestar.testing import TestClient

from controlroom.api.json_body import MAX_DEPTH, nested_deeper_than
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
