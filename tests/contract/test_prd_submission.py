"""The PRD's examples, verbatim, against the real service (a real job runs): FR-1 submission,
FR-2 validation, FR-3 run status and FR-6 lineage of the submitted job.

The bodies are copied from shared/PRD.md as text. FR-1's `job_type` is the PRD's list of
choices (`spark_etl|diagram_export|schema_migration|kb_catalog`); the body is sent with one of
them, `spark_etl` (the job type of FR-3's example), and every other byte as written. Its one
code file, `jobs/etl.py` with content `...`, is valid Python (an Ellipsis) and exits 0. No
`supabase` connection is configured: a fresh install.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest
from litestar.testing import TestClient

from controlroom.domain.lineage.model import job_id
from tests.conftest import wait_for_status

# PRD.md §FR-1, as written.
PRD_FR1_BODY = """\
{
  "job_type": "spark_etl|diagram_export|schema_migration|kb_catalog",
  "spec": {
    "text": "Natural language description of the job",
    "inputs": {
      "source": "supabase://schema.table",
      "target": "supabase://schema.output_table"
    }
  },
  "code": {
    "files": [
      {"path": "jobs/etl.py", "content": "..."}
    ]
  },
  "created_by": "continue-ide-plugin",
  "repo": {"url": "git@github.com:org/repo.git", "ref": "main"},
  "callbacks": {
    "on_complete": "https://hook.example.com/complete",
    "on_fail": "https://hook.example.com/fail"
  }
}
"""
PRD_JOB_TYPES = '"spark_etl|diagram_export|schema_migration|kb_catalog"'
BODY = PRD_FR1_BODY.replace(PRD_JOB_TYPES, '"spark_etl"').encode()
SENT = json.loads(BODY)
# PRD.md §FR-3 and §FR-6: the fields of their responses.
FR3_FIELDS = ("run_id", "job_type", "status", "started_at", "completed_at", "artifacts", "logs_url")
FR6_FIELDS = ("entity", "upstream", "downstream")
ENTITY = "schema.table"  # FR-6's query: GET /api/v1/lineage/graph?entity=schema.table

SUBMIT, VALIDATE, RUNS = "/api/v1/jobs/run", "/api/v1/jobs/validate", "/api/v1/runs"
JSON = {"Content-Type": "application/json"}


def test_the_prd_body_differs_from_prd_md_only_in_the_job_type_chosen() -> None:
    assert BODY.decode().replace('"spark_etl"', PRD_JOB_TYPES) == PRD_FR1_BODY
    assert SENT["code"]["files"][0]["content"] == "..."
    compile(SENT["code"]["files"][0]["content"], "jobs/etl.py", "exec")  # `...` is Python


@pytest.fixture
def submitted(client: TestClient[Any], auth: dict[str, str]) -> dict[str, Any]:
    """FR-1: the PRD's body, as bytes, to a fresh install; the 202's body."""
    resp = client.post(SUBMIT, content=BODY, headers={**auth, **JSON})
    assert resp.status_code == 202, resp.text
    return resp.json()


@pytest.fixture
def completed(client: TestClient[Any], auth: dict[str, str], submitted: dict[str, Any]) -> dict[str, Any]:
    """The FR-1 run once it has ended."""
    return wait_for_status(client, submitted["run_id"], auth, timeout=60)


def test_fr1_the_prd_body_is_queued_and_every_value_sent_comes_back(
    client: TestClient[Any], auth: dict[str, str], submitted: dict[str, Any],
) -> None:
    assert UUID(submitted["run_id"]) and submitted["status"] == "queued"
    assert datetime.fromisoformat(submitted["created_at"]).tzinfo is not None
    run = client.get(f"{RUNS}/{submitted['run_id']}", headers=auth).json()
    assert run["run_id"] == submitted["run_id"] and run["job_type"] == SENT["job_type"]
    assert run["created_at"] == submitted["created_at"]
    assert run["spec"]["text"] == SENT["spec"]["text"]
    assert run["spec"]["description"] == SENT["spec"]["text"]  # its alias, returned too
    assert run["spec"]["inputs"] == SENT["spec"]["inputs"]
    assert run["created_by"] == SENT["created_by"] and run["submitted_by"] == "alice"
    assert run["repo"] == SENT["repo"]
    assert run["callbacks"] == SENT["callbacks"]
    # The submitting client finds its runs by name; the token's subject still finds them too.
    for who in (SENT["created_by"], "alice"):
        listed = client.get(RUNS, params={"created_by": who}, headers=auth).json()["runs"]
        assert [r["run_id"] for r in listed] == [submitted["run_id"]], who
    assert client.get(RUNS, params={"created_by": "someone-else"}, headers=auth).json()["runs"] == []


def test_fr1_the_code_sent_is_kept_with_the_run(
    client: TestClient[Any], auth: dict[str, str], completed: dict[str, Any],
) -> None:
    [code] = [a for a in completed["artifacts"] if a["path"] == "code/jobs/etl.py"]
    content = client.get(code["url"], headers=auth)
    assert content.status_code == 200 and content.text == SENT["code"]["files"][0]["content"]


def test_fr2_the_same_body_validates_with_a_warning_for_the_unconfigured_connection(
    client: TestClient[Any], auth: dict[str, str],
) -> None:
    resp = client.post(VALIDATE, content=BODY, headers={**auth, **JSON})
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert report["valid"] is True
    assert [c["name"] for c in report["checks"]] == ["syntax", "schema", "dependencies"]
    assert all(c["severity"] in (None, "warning") and c["ok"] for c in report["checks"]), report
    schema = report["checks"][1]
    assert schema["severity"] == "warning"
    assert {w["path"] for w in schema["warnings"]} == {"spec.inputs.source", "spec.inputs.target"}
    for warning in schema["warnings"]:
        assert warning["severity"] == "warning"
        assert "connection 'supabase' is not configured" in warning["message"]
        assert "PUT /api/v1/connections/supabase" in warning["message"]  # how to configure it
    assert client.get(RUNS, headers=auth).json()["runs"] == []  # validating ran nothing


def test_fr3_the_run_status_has_the_prd_fields(
    client: TestClient[Any], auth: dict[str, str], completed: dict[str, Any],
) -> None:
    run = client.get(f"{RUNS}/{completed['run_id']}", headers=auth).json()
    assert all(field in run for field in FR3_FIELDS), run
    assert run["status"] == "completed" and run["job_type"] == "spark_etl"
    started, ended = (datetime.fromisoformat(run[k]) for k in ("started_at", "completed_at"))
    assert started <= ended
    assert run["artifacts"] and all({"path", "url"} <= set(a) for a in run["artifacts"])
    for artifact in run["artifacts"]:
        assert client.get(artifact["url"], headers=auth).status_code == 200, artifact
    logs = client.get(run["logs_url"], headers=auth)
    assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")


def test_fr6_the_declared_source_and_target_become_lineage_of_the_job(
    client: TestClient[Any], auth: dict[str, str], tenant: str, completed: dict[str, Any],
) -> None:
    assert completed["status"] == "completed", completed
    deadline = time.monotonic() + 10
    while (resp := client.get("/api/v1/lineage/graph", params={"entity": ENTITY}, headers=auth)
           ).status_code == 404:
        assert time.monotonic() < deadline, "the declared edge never reached the graph"
        time.sleep(0.05)
    assert resp.status_code == 200, resp.text
    graph = resp.json()
    assert all(field in graph for field in FR6_FIELDS)
    expected_job = str(job_id(tenant, "controlroom", completed["job_name"]))
    assert graph["entity"] == ENTITY and graph["namespace"] == "supabase" and graph["upstream"] == []
    [down] = graph["downstream"]
    assert (down["entity"], down["job_id"], down["run_id"]) == (
        "schema.output_table", expected_job, completed["run_id"])
    target = client.get("/api/v1/lineage/graph", params={"entity": "schema.output_table"},
                        headers=auth).json()
    [up] = target["upstream"]
    assert (up["entity"], up["job_id"]) == (ENTITY, expected_job) and target["downstream"] == []
    # ... and the run's events say so.
    events = client.get(f"{RUNS}/{completed['run_id']}/events", headers=auth).json()
    assert "lineage" in json.dumps(events) and "supabase://schema.output_table" in json.dumps(events)
