"""PRD FR-5, as the PRD writes it: POST /webhooks/continue completes a run for real.

A run a local worker is executing is stopped (its job process gone within seconds), the
reported summary and artifacts show on the run, and every artifact link answers.
"""

from __future__ import annotations

import time
from typing import Any

from litestar.testing import TestClient

from tests.conftest import job, wait_for_status, wait_until
from tests.job_processes import processes_of

CONTINUE = "/api/v1/webhooks/continue"
SILENT_SLEEPER = "import time\ntime.sleep(300)\n"
"""A job that says nothing: only the worker's own watch can notice its run ended."""
STOPPED_WITHIN_S = 5.0
SUMMARY = "ETL completed: 1000 rows processed"
REPORT_URL = "https://storage.example.com/etl/report.html"


def running_job(client: TestClient[Any], auth: dict[str, str]) -> str:
    run_id = client.post("/api/v1/jobs/run", json=job(SILENT_SLEEPER), headers=auth).json()["run_id"]
    wait_for_status(client, run_id, auth, statuses={"running"})
    wait_until(lambda: processes_of(run_id), what="the job process")
    return str(run_id)


def test_the_prd_body_completes_a_running_local_job_and_stops_it(
        client: TestClient[Any], auth: dict[str, str]) -> None:
    run_id = running_job(client, auth)
    uploaded = client.post("/api/v1/artifacts", params={"run_id": run_id, "path": "output/result.csv"},
                           content=b"id\n1\n", headers={**auth, "Content-Type": "text/csv"})
    assert uploaded.status_code == 201, uploaded.text
    body = {
        "run_id": run_id,
        "status": "completed",
        "summary": SUMMARY,
        "artifacts": ["output/result.csv", REPORT_URL,
                      {"path": "output/metrics.json", "url": "s3://etl-bucket/metrics.json"}],
    }
    reported = time.monotonic()
    r = client.post(CONTINUE, json=body, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"run_id": run_id, "status": "completed", "duplicate": False}

    wait_until(lambda: not processes_of(run_id), timeout=STOPPED_WITHIN_S, what="the job to stop")
    assert time.monotonic() - reported < STOPPED_WITHIN_S

    run = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
    assert run["status"] == "completed" and run["summary"] == SUMMARY and run["completed_at"]
    by_path = {a["path"]: a for a in run["artifacts"]}
    assert by_path["output/result.csv"]["artifact_id"] == uploaded.json()["artifact_id"]
    assert by_path["etl/report.html"]["url"] == REPORT_URL
    assert by_path["output/metrics.json"]["url"] == "s3://etl-bucket/metrics.json"
    assert client.get(by_path["output/result.csv"]["url"], headers=auth).content == b"id\n1\n"
    for path in ("etl/report.html", "output/metrics.json"):
        meta = client.get(f"/api/v1/artifacts/{by_path[path]['artifact_id']}", headers=auth)
        assert meta.status_code == 200 and meta.json()["external"] is True
    link = client.get(f"/api/v1/artifacts/{by_path['etl/report.html']['artifact_id']}/content",
                      headers=auth, follow_redirects=False)
    assert link.status_code == 307 and link.headers["location"] == REPORT_URL
    # The worker recorded nothing after the reported outcome.
    statuses = [e["data"].get("status") for e in client.get(
        f"/api/v1/runs/{run_id}/events", headers=auth).json()["events"] if e["event"] == "status"]
    assert statuses[-1] == "completed" and statuses.count("completed") == 1


def test_a_reported_failure_stops_the_job_and_is_the_runs_outcome(
        client: TestClient[Any], auth: dict[str, str]) -> None:
    run_id = running_job(client, auth)
    body = {"run_id": run_id, "status": "failed", "summary": "the warehouse refused the load"}
    assert client.post(CONTINUE, json=body, headers=auth).status_code == 200
    wait_until(lambda: not processes_of(run_id), timeout=STOPPED_WITHIN_S, what="the job to stop")
    run = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
    assert run["status"] == "failed" and run["error"]["message"] == body["summary"]


def test_what_a_report_cannot_keep_is_refused_by_name(
        client: TestClient[Any], auth: dict[str, str]) -> None:
    run_id = running_job(client, auth)
    try:
        cases = [
            ({"summary": "ok", "rows": 1000}, "rows"),
            ({"artifacts": ["output/never-uploaded.csv"]}, "artifacts[0]"),
            ({"artifacts": [{"path": "a.csv", "url": REPORT_URL, "bytes": 3}]}, "artifacts[0].bytes"),
            ({"artifacts": [{"path": "a.csv", "url": "file:///etc/passwd"}]}, "artifacts[0].url"),
        ]
        for extra, field in cases:
            r = client.post(CONTINUE, json={"run_id": run_id, "status": "completed", **extra},
                            headers=auth)
            assert r.status_code == 422, r.text
            assert r.json()["errors"][0]["field"] == field, r.text
        assert client.get(f"/api/v1/runs/{run_id}", headers=auth).json()["status"] == "running"
    finally:
        client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth)
