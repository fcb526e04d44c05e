"""POST /api/v1/jobs/validate answers what submit would refuse, and never runs or records anything.

Through the session's real service: the same body is validated (200 with a report) and then
submitted (422 with the same errors, plus their check, and no run); tables are looked up
through a real connection to the test database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient
from psycopg import sql

from controlroom.cli import Services
from tests.conftest import job

VALIDATE = "/api/v1/jobs/validate"
SUBMIT = "/api/v1/jobs/run"
RUNS = "/api/v1/runs"
CHECKS = ["syntax", "schema", "dependencies"]


@pytest.fixture(scope="module")
def new_streams(services: Services) -> Iterator[Callable[[], int]]:
    """How many aggregates (runs, connections) the event store holds: each starts at version 1."""
    table = sql.Identifier(services.commands.app.recorder.events_table_name)
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        query = sql.SQL("SELECT count(*) FROM {} WHERE originator_version = 1").format(table)
        yield lambda: int(conn.execute(query).fetchone()[0])  # type: ignore[index]


def errors_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every error of a report, tagged with its check, as submit lists them."""
    return [{"check": c["name"], **e} for c in report["checks"] for e in c["errors"]]


def files(**by_path: str) -> dict[str, Any]:
    return {"files": [{"path": p.replace("__", "/").replace("_dot_", "."), "content": c}
                      for p, c in by_path.items()]}


INVALID: dict[str, tuple[dict[str, Any], tuple[str, str, int | None, int | None]]] = {
    "python syntax": (job("x = 1\nprint(\n"), ("syntax", "main.py", 2, 6)),
    "sql syntax": (job("", job_type="schema_migration", spec={"target": "none"},
                       code=files(m__001_dot_sql="CREATE TABLE t (id int);\nSELEC 1;\n")),
                   ("syntax", "m/001.sql", 2, 1)),
    "dot syntax": (job("", job_type="diagram_export", code=files(g_dot_gv="digraph {\n  a -> ;\n}\n")),
                   ("syntax", "g.gv", 2, 8)),
    "missing import": (job("import os\nimport not_installed_anywhere\n"), ("dependencies", "main.py", 2, 8)),
    "bad requirement": (job("", code=files(main_dot_py="", requirements_dot_txt="ok\npkg[\n")),
                        ("dependencies", "requirements.txt", 2, 5)),
    "no sql for a migration": (job("print(1)", job_type="schema_migration", spec={"target": "x"}),
                               ("schema", "code.files", None, None)),
    "malformed input uri": (job("print(1)", spec={"inputs": ["a.b.c"]}),
                            ("schema", "spec.inputs[0]", None, None)),
    "unknown connection the job type connects to": (
        job("", job_type="kb_catalog", spec={"inputs": ["nowhere://public"]}),
        ("schema", "spec.inputs[0]", None, None)),
    "undecodable field": (job("print(1)", timeout_s="soon"), ("schema", "timeout_s", None, None)),
    "entrypoint not a file": (job("print(1)", spec={"entrypoint": "x.py"}),
                              ("schema", "spec.entrypoint", None, None)),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_an_invalid_job_is_reported_by_validate_and_refused_by_submit_with_the_same_errors(
    client: TestClient[Any], auth: dict[str, str], new_streams: Callable[[], int], name: str
) -> None:
    body, (check, path, line, column) = INVALID[name]
    before = new_streams()
    resp = client.post(VALIDATE, json=body, headers=auth)
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert report["valid"] is False and [c["name"] for c in report["checks"]] == CHECKS
    found = errors_of(report)
    assert {"check": check, "path": path, "line": line, "column": column} in [
        {k: e[k] for k in ("check", "path", "line", "column")} for e in found], found

    refused = client.post(SUBMIT, json=body, headers=auth)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    keys = ("check", "path", "line", "column", "message", "severity")
    assert [{k: e[k] for k in keys} for e in problem["errors"]] == found
    assert all(e["field"] for e in problem["errors"])
    assert new_streams() == before
    assert client.get(RUNS, headers=auth).json()["runs"] == []


def test_a_valid_job_is_valid_and_validating_runs_and_records_nothing(
    client: TestClient[Any], auth: dict[str, str], new_streams: Callable[[], int]
) -> None:
    body = job("import os, json\nfrom lib import util\nprint(util.X)\n",
               code=files(main_dot_py="from lib import util\n", lib__util_dot_py="X = 1\n"),
               spec={"inputs": ["raw.events"], "outputs": ["clean.events"]})
    before = new_streams()
    for _ in range(3):
        resp = client.post(VALIDATE, json=body, headers={**auth, "Idempotency-Key": "v-1"})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"valid": True, "checks": [
            {"name": n, "ok": True, "errors": [], "warnings": [], "severity": None} for n in CHECKS]}
    assert new_streams() == before
    assert client.get(RUNS, headers=auth).json()["runs"] == []
    assert client.post(SUBMIT, json=body, headers=auth).status_code == 202


def test_malformed_json_is_a_schema_error_at_its_line_and_column(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    body = b'{"job_type": "spark_etl",\n  "code": {,}}'
    resp = client.post(VALIDATE, content=body, headers={**auth, "Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    (error,) = errors_of(resp.json())
    assert (error["check"], error["path"], error["line"], error["column"]) == ("schema", "body", 2, 12)
    assert client.post(SUBMIT, content=body, headers={**auth, "Content-Type": "application/json"}
                       ).status_code == 400  # as it always was


def test_validate_needs_the_jobs_write_scope(
    client: TestClient[Any], tenant: str, token: Callable[..., str]
) -> None:
    reader = {"Authorization": f"Bearer {token(tenant, scopes=['runs:read'])}"}
    assert client.post(VALIDATE, json=job("print(1)"), headers=reader).status_code == 403
    assert client.post(VALIDATE, json=job("print(1)")).status_code == 401


def test_source_tables_are_looked_up_through_the_tenants_connection(
    client: TestClient[Any], auth: dict[str, str], services: Services
) -> None:
    schema = f"validate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}; CREATE TABLE {}.present (id int)").format(
            sql.Identifier(schema), sql.Identifier(schema)))
    for name, dsn in (("wh", services.dsn), ("down", "postgresql://nobody@127.0.0.1:1/none")):
        resp = client.put(f"/api/v1/connections/{name}", json={"dsn": dsn}, headers=auth)
        assert resp.status_code == 201, resp.text
    spec = {"inputs": [f"wh://{schema}.present", f"wh://{schema}.absent", "down://public.t"],
            "outputs": [f"wh://{schema}.new_table"]}
    report = client.post(VALIDATE, json=job("print(1)", spec=spec), headers=auth).json()
    assert errors_of(report) == [{"check": "schema", "path": "spec.inputs[1]", "line": None, "column": None,
                                  "message": f"table '{schema}.absent' does not exist in connection 'wh'",
                                  "severity": "error"}]
    (warning,) = report["checks"][1]["warnings"]
    assert warning["path"] == "spec.inputs[2]" and "could not be reached" in warning["message"]
    del spec["inputs"][1]
    ok = client.post(VALIDATE, json=job("print(1)", spec=spec), headers=auth).json()
    assert ok["valid"] is True and len(ok["checks"][1]["warnings"]) == 1
