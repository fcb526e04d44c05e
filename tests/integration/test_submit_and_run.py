"""Submitting a job runs it for real and the status shows every step."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import bootstrap, build_app, serving
from controlroom.settings import Settings
from tests.conftest import job, wait_for_status, wait_until

SUBMIT = "/api/v1/jobs/run"


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


def test_with_the_read_model_stopped_a_submit_says_its_run_is_not_visible_yet_and_reads_find_it(
    make_server_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No projector anywhere: the run is durable, the 202 says reads don't show it yet, and a GET
    answers from the log instead of a 404 (another tenant still gets a 404)."""
    monkeypatch.setattr(serving, "SETTLE_TIMEOUT_S", 0.5)  # the wait that is bound to run out
    keys = {"jwt_secret": uuid.uuid4().hex * 2, "secret_key": uuid.uuid4().hex}
    settings = Settings(database_url=make_server_database(), data_dir=tmp_path / "api", **keys)

    def auth(tenant: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + issue_token(
            keys["jwt_secret"], tenant=tenant, sub="alice", scopes=ALL_SCOPES, ttl_s=600)}

    mine, theirs = auth("lagging"), auth("other")
    body = job("print('later')", labels={"team": "data"})
    # First a projector runs (and builds the read models), then it goes away.
    with bootstrap(settings, run_worker=False) as services, \
            TestClient(build_app(services)) as client:
        early = client.post(SUBMIT, json=job("print('early')"), headers=mine).json()["run_id"]
        wait_until(lambda: client.get(f"/api/v1/runs/{early}", headers=mine).json()["visible"],
                   what="the read model to show the first run")
    with bootstrap(settings, run_worker=False, run_projections=False) as services:
        client: TestClient[Any]
        with TestClient(build_app(services)) as client:
            resp = client.post(SUBMIT, json=body, headers={**mine, "Idempotency-Key": "k1"})
            assert resp.status_code == 202, resp.text
            run_id = resp.json()["run_id"]
            assert resp.json()["visible"] is False
            assert resp.headers["run-visible"] == "false"
            assert int(resp.headers["retry-after"]) > 0
            assert resp.headers["location"] == f"/api/v1/runs/{run_id}"

            got = client.get(resp.headers["location"], headers=mine)
            assert got.status_code == 200, got.text
            shown = got.json()
            assert (shown["run_id"], shown["status"], shown["visible"]) == (run_id, "queued", False)
            assert shown["labels"] == {"team": "data"} and shown["submitted_by"] == "alice"
            assert got.headers["run-visible"] == "false"
            assert client.get(resp.headers["location"], headers=theirs).status_code == 404
            assert client.get(f"/api/v1/runs/{uuid.uuid4()}", headers=mine).status_code == 404

            again = client.post(SUBMIT, json=body, headers={**mine, "Idempotency-Key": "k1"})
            assert again.status_code == 202, again.text
            assert again.headers["idempotent-replayed"] == "true"
            assert (again.json()["run_id"], again.json()["visible"]) == (run_id, False)

    # A projector comes back: the same run is visible, read from the read model.
    with bootstrap(settings, run_worker=False) as services, TestClient(build_app(services)) as client:
        def visible() -> dict[str, Any] | None:
            run: dict[str, Any] = client.get(f"/api/v1/runs/{run_id}", headers=mine).json()
            return run if run["visible"] else None

        shown = wait_until(visible, what="the run in the read model")
        assert shown["status"] == "queued" and "run-visible" not in client.get(
            f"/api/v1/runs/{run_id}", headers=mine).headers
        fresh = client.post(SUBMIT, json=job("print('now')"), headers=mine)
        assert fresh.status_code == 202 and fresh.json()["visible"] is True
        assert "run-visible" not in fresh.headers
