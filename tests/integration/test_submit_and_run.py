"""Submitting a job runs it for real and the status shows every step."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from tests.conftest import job, wait_for_status


def test_a_submitted_run_is_readable_at_once_and_completes(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    resp = client.post("/api/v1/jobs/run", json=job("print('hello from the job')"), headers=auth)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] in {"queued", "running", "completed"}  # a worker may already have it
    run_id = body["run_id"]
    # read-your-writes: no waiting between the submit and the first GET
    first = client.get(f"/api/v1/runs/{run_id}", headers=auth)
    assert first.status_code == 200
    assert first.json()["run_id"] == run_id
    run = wait_for_status(client, run_id, auth)
    assert run["status"] == "completed"
    assert run["exit_code"] == 0
    assert run["started_at"] and run["completed_at"]
    logs = client.get(run["logs_url"], headers=auth)
    assert logs.status_code == 200
    assert "hello from the job" in logs.text


def test_a_failing_job_reports_the_tail_of_stderr(client: TestClient[Any], auth: dict[str, str]) -> None:
    source = "import sys\nprint('about to fail', file=sys.stderr)\nraise SystemExit(3)\n"
    run_id = client.post("/api/v1/jobs/run", json=job(source), headers=auth).json()["run_id"]
    run = wait_for_status(client, run_id, auth)
    assert run["status"] == "failed"
    assert run["exit_code"] == 3
    assert run["error"]["reason"] == "exit_code"
    assert "about to fail" in run["error"]["message"]
