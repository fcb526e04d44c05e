"""Each job type end to end: submitted through the API, run by the real worker as a subprocess.

The session's own test database doubles as the "customer" database: each test works in a
schema of its own, reached through a tenant connection whose DSN carries a password (the
test server trusts local connections, so any password works, and it must never be logged).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import psycopg
import pytest
from litestar.testing import TestClient

from controlroom.cli import Services
from controlroom.commands.errors import ConnectionNotFoundError
from controlroom.commands.messages import SubmitJob
from controlroom.commands.ports import PYTHON, JobContext, PlanError
from controlroom.jobtypes import default_job_types
from controlroom.jobtypes.diagram_export import DiagramExport
from controlroom.jobtypes.spark_etl import SparkEtl
from controlroom.runners import kb_catalog
from controlroom.runners.graphviz import bundled_dot
from tests.conftest import wait_for_status

SUBMIT = "/api/v1/jobs/run"
PASSWORD = "Etl-Pa55word-4-tests"


def with_password(dsn: str, password: str) -> str:
    """`dsn` with `password` in it (unless it already has one, which is then the secret)."""
    parts = urlsplit(dsn)
    if parts.password:
        return dsn
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or 'postgres'}:{password}@{host}").geturl()


@pytest.fixture
def warehouse(client: TestClient[Any], auth: dict[str, str], services: Services) -> Iterator[str]:
    """A connection named `warehouse` to a fresh schema of the test database; the schema name."""
    dsn = with_password(services.dsn, PASSWORD)
    resp = client.put("/api/v1/connections/warehouse", json={"dsn": dsn}, headers=auth)
    assert resp.status_code == 201, resp.text
    schema = f"wh_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield schema
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def sql(services: Services, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(services.dsn) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def run_job(client: TestClient[Any], auth: dict[str, str], job_type: str, files: dict[str, str],
            spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Submit, wait for the end; the run and its log."""
    body = {"job_type": job_type, "spec": {"description": "test", **spec},
            "code": {"files": [{"path": p, "content": c} for p, c in files.items()]}}
    resp = client.post(SUBMIT, json=body, headers=auth)
    assert resp.status_code == 202, resp.text
    run = wait_for_status(client, resp.json()["run_id"], auth, timeout=60)
    return run, client.get(run["logs_url"], headers=auth).text


def submit_past_validation(services: Services, tenant: str, job_type: str, files: dict[str, str],
                           spec: dict[str, Any]) -> str:
    """Submit straight to the write side: for jobs pre-flight validation would refuse at the API."""
    submitted = services.commands.submit(SubmitJob(
        tenant_id=tenant, created_by="alice", job_type=job_type,
        code={"files": [{"path": p, "content": c} for p, c in files.items()]}, spec=spec,
        secrets={}, timeout_s=60, max_retries=0, labels={}, callbacks={},
        job_name=f"{job_type}-test", request_hash="h",
    ))
    return str(submitted.run_id)


def lineage_edges(services: Services, run_id: str) -> set[tuple[str, str]]:
    """(source, target) of every LineageEdgeRecorded event of the run, from the event store."""
    with psycopg.connect(services.dsn) as conn:
        rows = conn.execute(
            "SELECT state FROM controlroom_events WHERE originator_id = %s AND topic LIKE %s",
            (UUID(run_id), "%LineageEdgeRecorded"),
        ).fetchall()
    return {(s["source"], s["target"]) for s in (json.loads(bytes(r[0])) for r in rows)}


def table_exists(services: Services, name: str) -> bool:
    return sql(services, f"SELECT to_regclass('{name}') IS NOT NULL")[0][0]


# -- spark_etl ---------------------------------------------------------------------------

COPY_JOB = """
import json, os, psycopg
[src] = json.loads(os.environ["CONTROLROOM_INPUTS"])
[dst] = json.loads(os.environ["CONTROLROOM_OUTPUTS"])
dsn = os.environ[src["env"]]
print("reading with", dsn)
print("::progress 50 copying")
with psycopg.connect(dsn) as conn:
    rows = conn.execute(f'SELECT id, name FROM {src["schema"]}.{src["table"]}').fetchall()
    with conn.cursor() as cur:
        cur.executemany(f'INSERT INTO {dst["schema"]}.{dst["table"]} VALUES (%s, %s)', rows)
print(f"copied {len(rows)} rows")
"""


def test_spark_etl_copies_rows_between_real_tables_and_records_lineage(
    client: TestClient[Any], auth: dict[str, str], services: Services, warehouse: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {warehouse}.src (id int, name text)")
        conn.execute(f"CREATE TABLE {warehouse}.dst (id int, name text)")
        conn.execute(f"INSERT INTO {warehouse}.src VALUES (1, 'ada'), (2, 'grace'), (3, 'edsger')")
    run, log = run_job(client, auth, "spark_etl", {"main.py": COPY_JOB}, {
        "inputs": [f"warehouse://{warehouse}.src"], "outputs": [f"warehouse://{warehouse}.dst"],
    })
    assert run["status"] == "completed", (run, log)
    assert sql(services, f"SELECT id, name FROM {warehouse}.dst ORDER BY id") == [
        (1, "ada"), (2, "grace"), (3, "edsger")]
    assert "copied 3 rows" in log
    assert "reading with postgresql://" in log and ":***@" in log
    assert PASSWORD not in log
    assert lineage_edges(services, run["run_id"]) == {
        (f"warehouse://{warehouse}.src", f"warehouse://{warehouse}.dst")}
    graph = client.get("/api/v1/lineage/graph", params={"entity": f"{warehouse}.dst"}, headers=auth)
    assert graph.json()["namespace"] == "warehouse", graph.text  # the connection, never null
    assert [(u["entity"], u["namespace"]) for u in graph.json()["upstream"]] == [
        (f"{warehouse}.src", "warehouse")]
    assert PASSWORD not in caplog.text
    assert PASSWORD not in client.get(f"/api/v1/runs/{run['run_id']}", headers=auth).text


def test_spark_etl_through_an_unconfigured_connection_runs_without_its_variable(
    client: TestClient[Any], auth: dict[str, str], services: Services,
) -> None:
    """Only the job's code would connect: a fresh install runs it, and the flow is lineage."""
    job = ("import json, os\n[src] = json.loads(os.environ['CONTROLROOM_INPUTS'])\n"
           "print('env', src['env'], 'CONTROLROOM_CONNECTION_NOWHERE' in os.environ)\n")
    run, log = run_job(client, auth, "spark_etl", {"main.py": job},
                       {"inputs": {"source": "nowhere://public.orders", "target": "nowhere://mart.daily"}})
    assert run["status"] == "completed", (run, log)
    assert "env None False" in log
    assert lineage_edges(services, run["run_id"]) == {("nowhere://public.orders", "nowhere://mart.daily")}


# -- schema_migration --------------------------------------------------------------------


def migrations(schema: str) -> dict[str, str]:
    return {
        "migrations/001_accounts.sql": f"CREATE TABLE {schema}.accounts (id int PRIMARY KEY);\n",
        "migrations/002_email.sql": (
            f"SET search_path TO {schema};\n"
            "ALTER TABLE accounts ADD COLUMN email text;\n"
            "CREATE TABLE audit (at timestamptz);\n"
        ),
    }


def test_schema_migration_applies_files_in_order_in_one_transaction(
    client: TestClient[Any], auth: dict[str, str], services: Services, warehouse: str,
) -> None:
    run, log = run_job(client, auth, "schema_migration", migrations(warehouse),
                       {"target": "warehouse", "job_name": "accounts-schema"})
    assert run["status"] == "completed", (run, log)
    assert sql(services, f"SELECT column_name FROM information_schema.columns WHERE table_schema = "
                         f"'{warehouse}' AND table_name = 'accounts' ORDER BY ordinal_position"
               ) == [("id",), ("email",)]
    assert run["progress"]["percent"] == 100
    assert "committed 2 file(s)" in log
    assert PASSWORD not in log
    source = "migration://accounts-schema"
    assert lineage_edges(services, run["run_id"]) == {
        (source, f"warehouse://{warehouse}.accounts"), (source, f"warehouse://{warehouse}.audit")}


def test_a_dry_run_migration_is_rolled_back(
    client: TestClient[Any], auth: dict[str, str], services: Services, warehouse: str,
) -> None:
    run, log = run_job(client, auth, "schema_migration", migrations(warehouse),
                       {"outputs": [f"warehouse://{warehouse}"], "dry_run": True})
    assert run["status"] == "completed", (run, log)
    assert "dry run" in log
    assert not table_exists(services, f"{warehouse}.accounts")
    assert lineage_edges(services, run["run_id"]) == set()


def test_a_failing_migration_reports_file_and_line_and_rolls_back_every_file(
    client: TestClient[Any], auth: dict[str, str], services: Services, warehouse: str,
) -> None:
    files = {
        "001_ok.sql": f"CREATE TABLE {warehouse}.kept_only_if_all_pass (id int);\n",
        "002_broken.sql": f"-- adds a column\n\nALTER TABLE {warehouse}.no_such_table ADD COLUMN x int;\n",
    }
    run, log = run_job(client, auth, "schema_migration", files, {"target": "warehouse"})
    assert run["status"] == "failed", (run, log)
    assert f'002_broken.sql:3:1: ERROR: relation "{warehouse}.no_such_table" does not exist' in log
    assert "002_broken.sql:3" in run["error"]["message"]
    assert "rolled back" in log
    assert not table_exists(services, f"{warehouse}.kept_only_if_all_pass")
    assert lineage_edges(services, run["run_id"]) == set()


def test_a_syntax_error_is_located_by_line_and_column(
    client: TestClient[Any], auth: dict[str, str], services: Services, warehouse: str, tenant: str,
) -> None:
    broken = f"CREATE TABLE {warehouse}.t (id int);\n\nINSERT INTO {warehouse}.t VALUES (1,);\n"
    run_id = submit_past_validation(services, tenant, "schema_migration", {"001.sql": broken},
                                    {"target": "warehouse"})
    run = wait_for_status(client, run_id, auth)
    log = client.get(run["logs_url"], headers=auth).text
    assert run["status"] == "failed", (run, log)
    column = broken.splitlines()[2].index(")") + 1
    assert f'001.sql:3:{column}: ERROR: syntax error at or near ")"' in log
    assert not table_exists(services, f"{warehouse}.t")


# -- diagram_export ----------------------------------------------------------------------


def test_diagram_export_renders_dot_sources_to_svg_and_png(
    client: TestClient[Any], auth: dict[str, str],
) -> None:
    files = {"diagrams/flow.dot": "digraph flow { extract -> load }\n",
             "arch.gv": "graph { api -- db }\n", "notes.mmd": "graph TD; A-->B\n"}
    run, log = run_job(client, auth, "diagram_export", files, {})
    assert run["status"] == "completed", (run, log)
    for rendered in ("output/diagrams/flow.svg", "output/diagrams/flow.png", "output/arch.svg",
                     "output/arch.png"):
        assert f"-> {rendered} (" in log
    assert "skipped notes.mmd: Mermaid can't be rendered offline" in log


GRAPHVIZ_PROGRAMS = ("dot", "nop")
"""What Control Room looks for on the PATH: the renderer and pre-flight's parser."""


@pytest.fixture
def without_system_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process's PATH (so the worker's, the pre-flight check's and the jobs') without Graphviz.

    The machine has Graphviz installed (CI installs it for the other tests), so it is hidden
    rather than relied on to be absent: one directory of links to every other program.
    """
    bin_dir = tmp_path / "bin-without-graphviz"
    bin_dir.mkdir()
    for entry in filter(None, os.environ.get("PATH", "").split(os.pathsep)):
        if not os.path.isdir(entry):
            continue
        for program in os.scandir(entry):
            target = bin_dir / program.name
            if program.name not in GRAPHVIZ_PROGRAMS and not target.exists() and program.is_file():
                target.symlink_to(program.path)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert all(shutil.which(p) is None for p in GRAPHVIZ_PROGRAMS)
    return bin_dir


def test_diagram_export_runs_without_system_graphviz(
    client: TestClient[Any], auth: dict[str, str], without_system_graphviz: Path,
) -> None:
    files = {"flow.dot": "digraph flow { extract -> load }\n", "bad.gv": "graph {\n  a -- ;\n}\n"}
    validated = client.post("/api/v1/jobs/validate", json={
        "job_type": "diagram_export", "spec": {},
        "code": {"files": [{"path": p, "content": c} for p, c in files.items()]}}, headers=auth)
    assert validated.status_code == 200, validated.text
    syntax = next(c for c in validated.json()["checks"] if c["name"] == "syntax")
    assert [(e["path"], e["line"]) for e in syntax["errors"]] == [("bad.gv", 2)], validated.json()
    assert all(not c["errors"] for c in validated.json()["checks"] if c["name"] != "syntax")

    run, log = run_job(client, auth, "diagram_export", {"flow.dot": files["flow.dot"]}, {})
    assert run["status"] == "completed", (run, log)
    assert f"rendering with {bundled_dot()} (graphviz-pure, installed with Control Room)" in log
    assert "-> output/flow.svg (" in log and "-> output/flow.png (" in log


def test_a_diagram_dot_rejects_fails_the_run(
    client: TestClient[Any], auth: dict[str, str], services: Services, tenant: str,
) -> None:
    run_id = submit_past_validation(services, tenant, "diagram_export",
                                    {"bad.dot": "digraph { a -> }\n"}, {})
    run = wait_for_status(client, run_id, auth)
    log = client.get(run["logs_url"], headers=auth).text
    assert run["status"] == "failed"
    assert "bad.dot:" in log and "syntax error" in log


# -- kb_catalog --------------------------------------------------------------------------


def test_kb_catalog_catalogues_a_schema_and_links_each_table_to_the_catalog(
    client: TestClient[Any], auth: dict[str, str], services: Services, warehouse: str,
) -> None:
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {warehouse}.orders (id int NOT NULL, total numeric(10,2))")
        conn.execute(f"COMMENT ON TABLE {warehouse}.orders IS 'one row per order'")
        conn.execute(f"INSERT INTO {warehouse}.orders VALUES (1, 9.5), (2, 12)")
        conn.execute(f"CREATE VIEW {warehouse}.big_orders AS SELECT * FROM {warehouse}.orders")
    run, log = run_job(client, auth, "kb_catalog", {"README.md": "catalog the warehouse\n"},
                       {"inputs": [f"warehouse://{warehouse}"], "job_name": "warehouse docs"})
    assert run["status"] == "completed", (run, log)
    assert f"catalogued {warehouse}.orders (table): 2 columns, 2 rows" in log
    assert f"catalogued {warehouse}.big_orders (view): 2 columns, ? rows" in log
    assert "wrote output/catalog.json (2 tables)" in log and "wrote output/catalog.md" in log
    assert PASSWORD not in log
    catalog = "catalog://warehouse%20docs"
    assert lineage_edges(services, run["run_id"]) == {
        (f"warehouse://{warehouse}.orders", catalog), (f"warehouse://{warehouse}.big_orders", catalog)}
    graph = client.get("/api/v1/lineage/graph", params={"entity": catalog}, headers=auth).json()
    assert {(u["entity"], u["namespace"]) for u in graph["upstream"]} == {
        (f"{warehouse}.orders", "warehouse"), (f"{warehouse}.big_orders", "warehouse")}


def test_the_catalog_documents_columns_types_comments_and_row_counts(
    services: Services, warehouse: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {warehouse}.customers (id bigint NOT NULL DEFAULT 0, "
                     "name varchar(80), joined date)")
        conn.execute(f"COMMENT ON TABLE {warehouse}.customers IS 'people | who pay'")
        conn.execute(f"COMMENT ON COLUMN {warehouse}.customers.name IS 'full name'")
        conn.execute(f"INSERT INTO {warehouse}.customers (id, name) VALUES (1, 'ada')")
        conn.execute(f"CREATE TABLE {warehouse}.ignored (x int)")
    monkeypatch.setenv("CONTROLROOM_CONNECTION_WAREHOUSE", services.dsn)
    item = {"uri": f"warehouse://{warehouse}.customers", "connection": "warehouse", "schema": warehouse,
            "table": "customers", "env": "CONTROLROOM_CONNECTION_WAREHOUSE"}
    catalog = kb_catalog.build_catalog([item], "catalog://docs")
    as_json, as_md = kb_catalog.write(catalog, tmp_path)

    assert json.loads(as_json.read_text())["tables"] == [{
        "entity": f"{warehouse}.customers", "connection": "warehouse", "schema": warehouse,
        "name": "customers", "kind": "table", "comment": "people | who pay", "row_count": 1,
        "row_count_exact": True, "columns": [
            {"name": "id", "type": "bigint", "nullable": False, "default": "0", "comment": None},
            {"name": "name", "type": "character varying(80)", "nullable": True, "default": None,
             "comment": "full name"},
            {"name": "joined", "type": "date", "nullable": True, "default": None, "comment": None},
        ],
    }]
    markdown = as_md.read_text()
    assert f"## `{warehouse}.customers` (warehouse)" in markdown
    assert "people | who pay" in markdown
    assert "| name | character varying(80) | yes |  | full name |" in markdown


@pytest.mark.parametrize("host_path", [True, False], ids=["host-path", "no-graphviz-on-path"])
def test_the_diagram_runner_writes_real_svg_and_png_files(tmp_path: Path, host_path: bool) -> None:
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "flow.dot").write_text("digraph { a -> b }\n")
    path = os.environ["PATH"] if host_path else str(tmp_path / "empty-path")
    env = {"PATH": path, "CONTROLROOM_DIAGRAMS": '["g/flow.dot"]', "CONTROLROOM_DIAGRAMS_SKIPPED": "[]"}
    done = subprocess.run([sys.executable, "-I", "-m", "controlroom.runners.diagram_export"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    svg = (tmp_path / "output/g/flow.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<title>a&#45;&gt;b</title>" in svg
    assert (tmp_path / "output/g/flow.png").read_bytes().startswith(b"\x89PNG")
    # the host's Graphviz is preferred; without one, graphviz-pure installed with Control Room
    host = shutil.which("dot", path=path)
    assert f"rendering with {host or bundled_dot()} " in done.stdout
    assert ("(graphviz-pure)" in svg) == (host is None)


# -- planning (no processes) -------------------------------------------------------------


class Known:
    """A Connections port over a dict (the real store is exercised by the tests above)."""

    def __init__(self, dsns: dict[str, str]) -> None:
        self.dsns = dsns

    def dsn(self, tenant_id: str, name: str) -> str:
        if name not in self.dsns:
            raise ConnectionNotFoundError(name)
        return self.dsns[name]

    def names(self, tenant_id: str) -> list[str]:
        return sorted(self.dsns)


def context(job_type: str, files: dict[str, str], spec: dict[str, Any]) -> JobContext:
    return JobContext(run_id=uuid.uuid4(), attempt=1, tenant_id="t", job_type=job_type,
                      job_name="nightly", files=files, spec=spec, secrets={})


def test_spark_etl_runs_under_spark_submit_when_it_is_installed() -> None:
    conns = Known({"supabase": "postgresql://u:p%40ss-word@db/x"})
    ctx = context("spark_etl", {"main.py": ""}, {
        "inputs": ["supabase://public.orders", "supabase://public.users"],
        "outputs": ["supabase://mart.daily"]})
    with_spark = SparkEtl(conns, which=lambda tool: f"/opt/spark/bin/{tool}").plan(ctx)
    assert with_spark.argv == ["/opt/spark/bin/spark-submit", "main.py"]
    plain = SparkEtl(conns, which=lambda tool: None).plan(ctx)
    assert plain.argv == [PYTHON, "-u", "main.py"]
    assert plain.env["CONTROLROOM_CONNECTION_SUPABASE"] == "postgresql://u:p%40ss-word@db/x"
    assert json.loads(plain.env["CONTROLROOM_OUTPUTS"]) == [{
        "uri": "supabase://mart.daily", "connection": "supabase", "schema": "mart", "table": "daily",
        "entity": "mart.daily", "env": "CONTROLROOM_CONNECTION_SUPABASE"}]
    assert set(plain.redact) == {"p%40ss-word", "p@ss-word"}
    assert plain.lineage_on_success == []  # the declared flow is every job type's (below)
    planned = default_job_types(conns).plan(ctx)
    assert planned.lineage_on_success == [("supabase://public.orders", "supabase://mart.daily"),
                                          ("supabase://public.users", "supabase://mart.daily")]


def test_every_job_type_records_the_flow_its_spec_declares_in_the_prd_form_too() -> None:
    spec = {"inputs": {"source": "supabase://Schema.Table", "target": "supabase://schema.output_table"}}
    planned = default_job_types().plan(context("diagram_export", {"g.dot": "digraph {}"}, spec))
    assert planned.lineage_on_success == [("supabase://schema.table", "supabase://schema.output_table")]
    dry = default_job_types().plan(context("spark_etl", {"main.py": ""}, {**spec, "dry_run": True}))
    assert dry.lineage_on_success == []


@pytest.mark.parametrize(("job_type", "files", "spec", "reason"), [
    ("kb_catalog", {"README": ""}, {"inputs": ["nowhere://a"]}, "connection_not_found"),
    ("spark_etl", {"main.py": ""}, {"inputs": "nowhere://a.b"}, "invalid_spec"),
    ("spark_etl", {"main.py": ""}, {"outputs": ["db://a.b/c"]}, "invalid_uri"),
    ("schema_migration", {"main.py": ""}, {"target": "db"}, "no_migrations"),
    ("schema_migration", {"1.sql": "select 1"}, {}, "no_target"),
    ("kb_catalog", {"README": ""}, {}, "no_inputs"),
    ("kb_catalog", {"README": ""}, {"inputs": ["public"]}, "invalid_uri"),
    ("diagram_export", {"a.mmd": ""}, {}, "no_diagrams"),
])
def test_jobs_that_cannot_start_fail_with_a_named_reason(
    job_type: str, files: dict[str, str], spec: dict[str, Any], reason: str,
) -> None:
    with pytest.raises(PlanError) as failed:
        default_job_types(Known({"db": "postgresql://db/x"})).plan(context(job_type, files, spec))
    assert failed.value.reason == reason


def test_diagram_export_without_any_graphviz_says_how_to_install_it() -> None:
    with pytest.raises(PlanError) as failed:
        DiagramExport(find_dot=lambda: None).plan(context("diagram_export", {"g.dot": ""}, {}))
    assert failed.value.reason == "missing_tool"
    assert "apt-get install graphviz" in str(failed.value) and "graphviz-pure" in str(failed.value)
