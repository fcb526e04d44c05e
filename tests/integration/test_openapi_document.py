"""The OpenAPI document tells the truth: problem responses, bodies, tokens, Allow."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import TestClient

from controlroom.api.openapi import facts

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
OPEN = {"/healthz", "/readyz"}
PARAM = re.compile(r"\{(\w+):(\w+)\}")
SOME_ID = "7f1c6f6e-2f5e-4a41-9d6a-0f0e8f3b1a11"


@pytest.fixture(scope="module")
def document(client: TestClient[Any]) -> dict[str, Any]:
    resp = client.get("/schema/openapi.json")
    assert resp.status_code == 200
    return dict(resp.json())


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in document["paths"].items()
            for method, op in item.items()]


def test_every_error_response_is_a_problem_document(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "instance"}
    assert "errors" in problem["properties"]
    for method, path, op in operations(document):
        errors = {s: r for s, r in op["responses"].items() if int(s) >= 400}
        assert "400" in errors, (method, path)
        for status, response in errors.items():
            if (method, path, status) == ("GET", "/readyz", "503"):
                continue  # not ready: the same checks document as ready
            assert response["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}, (
                method, path, status)


def test_routes_needing_a_token_say_so_and_document_401_and_403(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for method, path, op in operations(document):
        if path in OPEN:
            assert "security" not in op and "401" not in op["responses"], (method, path)
            continue
        assert {"bearer": []} in op["security"], (method, path)
        assert {"401", "403"} <= set(op["responses"]), (method, path)


def test_write_routes_document_their_body_and_its_refusals(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        key = f"{method} {path}"
        if method not in ("POST", "PUT", "PATCH") or key in facts.NO_BODY:
            assert "requestBody" not in op, key
            continue
        body = op.get("requestBody")
        assert body is not None, f"{key}: name its body in api/openapi/facts.py"
        assert body["required"] is (key in facts.JSON_BODIES), key
        assert {"413", "422"} <= set(op["responses"]), key
        if "application/json" in body["content"]:
            assert "415" in op["responses"], key


def test_json_bodies_are_the_structs_the_routes_decode(document: dict[str, Any]) -> None:
    submit = document["paths"]["/api/v1/jobs/run"]["post"]["requestBody"]["content"]
    ref = submit["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"job_type", "code"} <= set(schema["required"])
    assert schema["properties"]["job_type"]["enum"]  # the job types, not any string


def test_every_operation_the_facts_name_exists(client: TestClient[Any], document: dict[str, Any]) -> None:
    known = {f"{m} {p}" for m, p, _ in operations(document)}
    named = {*facts.JSON_BODIES, *facts.ANY_JSON_BODY, *facts.RAW_BODIES, *facts.NO_BODY,
             *facts.EXTRA_STATUSES, *facts.OWN_BODY_STATUSES, *facts.EVENT_STREAMS,
             *facts.BINARY_ANSWERS}
    assert named <= known, named - known


def test_integer_parameters_state_their_bounds_and_strings_refuse_nul(document: dict[str, Any]) -> None:
    params = {p["name"]: p["schema"] for p in document["paths"]["/api/v1/events"]["get"]["parameters"]}
    after = next(s for s in params["after"]["oneOf"] if s["type"] == "integer")
    assert (after["minimum"], after["maximum"]) == (0, 2**63 - 1)  # Litestar drops ge=0 of an optional
    job_type = next(s for s in params["job_type"]["oneOf"] if s["type"] == "string")
    assert job_type["pattern"] == "^[^\\u0000]*$"


def test_options_and_405_list_every_method_of_a_path(
        client: TestClient[Any], auth: dict[str, str]) -> None:
    for route in client.app.routes:
        if not route.path.startswith("/api/"):
            continue
        path = PARAM.sub(lambda m: SOME_ID if m[2] == "uuid" else "x", route.path)
        expected = sorted(route.methods)
        resp = client.options(path, headers=auth)
        assert resp.status_code == 204, (path, resp.text)
        assert resp.headers["allow"].split(", ") == expected, path
        unused = next(m for m in ("PATCH", "PUT", "DELETE") if m not in route.methods)
        resp = client.request(unused, path, headers=auth)
        assert resp.status_code == 405, (path, resp.text)
        assert sorted(resp.headers["allow"].split(", ")) == expected, path
