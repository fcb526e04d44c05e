"""A run's whole life through the API, with the real worker running real subprocesses.

Covers idempotent submission, cancellation (queued, running, finished, twice), timeouts,
exit codes, batched log output, progress lines, reported events and secret handling.
Jobs that must stay alive while the test looks at them wait at a gate the test opens
(tests/job_gate.py), so nothing here synchronises on a plain sleep.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from litestar.testing import TestClient

from controlroom.adapters.execution.local_executor import PASSTHROUGH_ENV
from controlroom.cli import Services
from tests.conftest import job, read_back, wait_for_status, wait_until
from tests.job_gate import JobGate
from tests.job_processes import processes_of

PROBLEM_JSON = "application/problem+json"
SUBMIT = "/api/v1/jobs/run"


# -- helpers ---------------------------------------------------------------------------


def submit(client: TestClient[Any], auth: dict[str, str], body: dict[str, Any]) -> str:
    resp = client.post(SUBMIT, json=body, headers=auth)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


@pytest.fixture
def gate() -> Iterator[JobGate]:
    """A gate for one job (sandboxed jobs see none of the test's files)."""
    with JobGate() as g:
        yield g


def gated(gate: JobGate, before: str = "", after: str = "") -> str:
    """Job source: run `before`, wait (at most 30 s) until the test opens `gate`, run `after`."""
    return f"{before}\n{gate.source()}{after}\n"


def logs(client: TestClient[Any], run_id: str, auth: dict[str, str], **params: str) -> str:
    resp = client.get(f"/api/v1/runs/{run_id}/logs", headers=auth, params=params)
    assert resp.status_code == 200, resp.text
    return resp.text


def event_topics(services: Services, run_id: str) -> list[str]:
    """The topics of the run's stored events, in stream order."""
    with psycopg.connect(services.dsn) as conn:
        rows = conn.execute(
            "SELECT topic FROM controlroom_events WHERE originator_id = %s ORDER BY originator_version",
            (UUID(run_id),),
        ).fetchall()
    return [r[0] for r in rows]


def count_events(services: Services, run_id: str, name: str) -> int:
    return sum(1 for t in event_topics(services, run_id) if t.endswith(f"Run.{name}"))


def is_gone(pid: int) -> bool:
    """True if the process no longer exists or is only a zombie awaiting its reaper."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    state = next(line.split()[1] for line in status.splitlines() if line.startswith("State:"))
    return state in ("Z", "X")


def assert_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["detail"]
    return body


# -- idempotency -----------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_return_the_same_run_which_runs_once(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    body = job("print('idempotent job ran')")
    headers = {**auth, "Idempotency-Key": "key-same-body"}
    first = client.post(SUBMIT, json=body, headers=headers)
    second = client.post(SUBMIT, json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert second.status_code == 202, second.text
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    run_id = first.json()["run_id"]
    assert second.json()["run_id"] == run_id

    run = wait_for_status(client, run_id, auth)
    assert run["status"] == "completed"
    listed = client.get("/api/v1/runs", headers=auth).json()["runs"]
    assert [r["run_id"] for r in listed] == [run_id]
    assert logs(client, run_id, auth).count("idempotent job ran") == 1


def test_the_same_idempotency_key_with_a_different_body_is_a_conflict(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    headers = {**auth, "Idempotency-Key": "key-different-body"}
    first = client.post(SUBMIT, json=job("print(1)"), headers=headers)
    assert first.status_code == 202, first.text
    resp = client.post(SUBMIT, json=job("print(2)"), headers=headers)
    assert_problem(resp, 409)
    listed = client.get("/api/v1/runs", headers=auth).json()["runs"]
    assert [r["run_id"] for r in listed] == [first.json()["run_id"]]


def test_the_same_idempotency_key_used_by_another_tenant_creates_a_separate_run(
    client: TestClient[Any], auth: dict[str, str], token: Callable[..., str]
) -> None:
    other = {"Authorization": f"Bearer {token('tenant-other-' + os.urandom(4).hex())}"}
    body = job("print('shared key')")
    mine = client.post(SUBMIT, json=body, headers={**auth, "Idempotency-Key": "shared-key"})
    theirs = client.post(SUBMIT, json=body, headers={**other, "Idempotency-Key": "shared-key"})
    assert mine.status_code == theirs.status_code == 202
    assert "Idempotent-Replayed" not in theirs.headers
    assert mine.json()["run_id"] != theirs.json()["run_id"]
    assert client.get(f"/api/v1/runs/{theirs.json()['run_id']}", headers=auth).status_code == 404
    wait_for_status(client, mine.json()["run_id"], auth)
    wait_for_status(client, theirs.json()["run_id"], other)


# -- cancellation ----------------------------------------------------------------------


def test_a_run_cancelled_right_after_submission_ends_cancelled(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    run_id = submit(client, auth, job("import time\ntime.sleep(30)"))
    resp = client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth)
    assert resp.status_code == 202, resp.text
    assert resp.json()["cancel_requested"] is True
    run = wait_for_status(client, run_id, auth, timeout=10)
    assert run["status"] == "cancelled"
    if run["started_at"] is None:
        assert run["summary"] == "cancelled before it started"


def test_cancelling_a_running_run_kills_the_job_and_its_children(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    source = (
        "import os, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', "
        "'import os, time; print(\"child\", os.getpid(), flush=True); time.sleep(60)'])\n"
        "print('job', os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    run_id = submit(client, auth, job(source))
    wait_for_status(client, run_id, auth, statuses={"running"}, timeout=10)

    def started() -> bool:
        names = {line.partition(" ")[0] for line in logs(client, run_id, auth).splitlines()}
        return {"job", "child"} <= names

    wait_until(started, what="the job and its child to start")
    # The pids they print are their sandbox's own: find them on the host by their run id.
    found = processes_of(run_id)
    assert len(found) >= 2 and not any(is_gone(pid) for pid in found)

    started = time.monotonic()
    resp = client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth)
    assert resp.status_code == 202, resp.text
    run = wait_for_status(client, run_id, auth, statuses={"cancelled"}, timeout=5)
    assert time.monotonic() - started < 5
    assert run["completed_at"] is not None
    wait_until(lambda: all(is_gone(pid) for pid in found), timeout=3,
               what="the job process and its child to be gone")


def test_cancelling_a_finished_run_is_a_conflict(client: TestClient[Any], auth: dict[str, str]) -> None:
    run_id = submit(client, auth, job("print('done')"))
    assert wait_for_status(client, run_id, auth)["status"] == "completed"
    assert_problem(client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth), 409)
    assert client.get(f"/api/v1/runs/{run_id}", headers=auth).json()["status"] == "completed"


def test_cancelling_a_running_run_twice_is_accepted_twice_and_cancels_once(
    client: TestClient[Any], auth: dict[str, str], services: Services
) -> None:
    # The job ignores SIGTERM, so it stays running through the kill grace period:
    # the second request reliably lands while the first is still being carried out.
    source = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    run_id = submit(client, auth, job(source))
    wait_for_status(client, run_id, auth, statuses={"running"}, timeout=10)
    wait_until(lambda: "ready" in logs(client, run_id, auth), what="the job to be ready")

    first = client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth)
    second = client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth)
    assert first.status_code == 202, first.text
    assert second.status_code == 202, second.text
    assert second.json()["cancel_requested"] is True

    run = wait_for_status(client, run_id, auth, statuses={"cancelled"}, timeout=8)
    assert run["status"] == "cancelled"
    assert count_events(services, run_id, "RunCancelRequested") == 1
    assert count_events(services, run_id, "RunCancelled") == 1


# -- outcomes --------------------------------------------------------------------------


def test_a_run_exceeding_its_timeout_fails_with_reason_timeout(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    started = time.monotonic()
    run_id = submit(client, auth, job("import time\ntime.sleep(30)", timeout_s=1))
    run = wait_for_status(client, run_id, auth, timeout=8)
    assert run["status"] == "failed"
    assert run["error"]["reason"] == "timeout"
    assert time.monotonic() - started < 8


def test_a_non_zero_exit_code_fails_the_run_with_the_tail_of_stderr(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    source = (
        "import sys\n"
        "for i in range(30):\n"
        "    print(f'err line {i}', file=sys.stderr)\n"
        "sys.exit(7)\n"
    )
    run = wait_for_status(client, submit(client, auth, job(source)), auth)
    assert run["status"] == "failed"
    assert run["exit_code"] == 7
    assert run["error"]["reason"] == "exit_code"
    message = run["error"]["message"]
    assert "err line 29" in message
    assert "err line 0\n" not in message + "\n"  # only the tail is kept


def test_exit_code_zero_completes_the_run_at_one_hundred_percent(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    run = wait_for_status(client, submit(client, auth, job("print('ok')")), auth)
    assert run["status"] == "completed"
    assert run["exit_code"] == 0
    assert run["error"] is None
    assert run["progress"]["percent"] == 100


def test_a_run_completing_on_retry_shows_no_error_and_keeps_the_first_failure_in_its_events(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    source = (
        "import os, sys\n"
        "if os.environ['CONTROLROOM_ATTEMPT'] == '1':\n"
        "    print('first attempt breaks', file=sys.stderr)\n"
        "    sys.exit(3)\n"
        "print('second attempt works')\n"
    )
    run_id = submit(client, auth, job(source, max_retries=1))
    run = wait_for_status(client, run_id, auth)
    assert run["status"] == "completed", run
    assert run["attempt"] == 2
    assert run["exit_code"] == 0
    assert run["error"] is None
    events = client.get(f"/api/v1/runs/{run_id}/events", headers=auth,
                        params={"limit": 1000}).json()["events"]
    assert any("first attempt breaks" in str(e) for e in events), events


# -- job output ------------------------------------------------------------------------


def test_job_output_is_recorded_in_order_as_a_few_batched_log_events(
    client: TestClient[Any], auth: dict[str, str], services: Services
) -> None:
    source = "import sys\nfor i in range(2000):\n    print(f'line {i:04d}')\n"
    run_id = submit(client, auth, job(source))
    run = wait_for_status(client, run_id, auth)
    assert run["status"] == "completed"
    assert logs(client, run_id, auth).splitlines() == [f"line {i:04d}" for i in range(2000)]
    assert run["log_lines"] == 2000
    logged = count_events(services, run_id, "RunLogged")
    assert 1 <= logged <= 20, f"{logged} RunLogged events for 2,000 lines"


def test_the_stream_parameter_filters_the_log(client: TestClient[Any], auth: dict[str, str]) -> None:
    source = (
        "import sys\n"
        "print('out one')\n"
        "print('err one', file=sys.stderr)\n"
        "print('out two')\n"
        "print('err two', file=sys.stderr)\n"
    )
    run_id = submit(client, auth, job(source))
    assert wait_for_status(client, run_id, auth)["status"] == "completed"
    assert logs(client, run_id, auth, stream="stderr").splitlines() == ["err one", "err two"]
    assert logs(client, run_id, auth, stream="stdout").splitlines() == ["out one", "out two"]
    assert sorted(logs(client, run_id, auth).splitlines()) == ["err one", "err two", "out one", "out two"]


def test_progress_lines_become_run_progress_and_stay_out_of_the_log(
    client: TestClient[Any], auth: dict[str, str], gate: JobGate
) -> None:
    source = gated(gate, before="print('before')\nprint('::progress 40 loading rows')",
                   after="print('after')")
    run_id = submit(client, auth, job(source))

    def progressed() -> dict[str, Any] | None:
        run: dict[str, Any] = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
        return run if (run["progress"] or {}).get("percent") == 40 else None

    run = wait_until(progressed, what="progress 40")
    assert run["status"] == "running"
    assert run["progress"]["message"] == "loading rows"
    gate.open()
    assert wait_for_status(client, run_id, auth)["status"] == "completed"
    text = logs(client, run_id, auth)
    assert text.splitlines() == ["before", "after"]
    assert "::progress" not in text


# -- events reported through the API ---------------------------------------------------


def test_reported_progress_and_log_events_show_in_the_run_once_read_back(
    client: TestClient[Any], auth: dict[str, str], gate: JobGate
) -> None:
    run_id = submit(client, auth, job(gated(gate)))
    wait_for_status(client, run_id, auth, statuses={"running"}, timeout=10)
    events_url = f"/api/v1/runs/{run_id}/events"

    one = client.post(events_url, headers=auth,
                      json={"event_type": "progress", "percent": 40, "message": "x"})
    assert one.status_code == 202, one.text
    assert one.json()["accepted"] == 1
    read_back(client, auth, run_id, one)
    progress = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()["progress"]
    assert (progress["percent"], progress["message"]) == (40, "x")

    batch = [
        {"event_type": "progress", "percent": 60, "message": "halfway"},
        {"event_type": "log", "text": "reported line one\nreported line two"},
        {"event_type": "log", "text": "reported on stderr", "stream": "stderr"},
    ]
    many = client.post(events_url, headers=auth, json=batch)
    assert many.status_code == 202, many.text
    assert many.json()["accepted"] == 3
    read_back(client, auth, run_id, many)
    run = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
    assert (run["progress"]["percent"], run["progress"]["message"]) == (60, "halfway")
    text = logs(client, run_id, auth)
    assert "reported line one\nreported line two\nreported on stderr" in text
    assert logs(client, run_id, auth, stream="stderr").splitlines() == ["reported on stderr"]

    gate.open()
    assert wait_for_status(client, run_id, auth)["status"] == "completed"
    late = client.post(events_url, headers=auth, json={"event_type": "log", "text": "too late"})
    assert_problem(late, 409)
    assert "too late" not in logs(client, run_id, auth)


# -- secrets ---------------------------------------------------------------------------


SECRET = "s3cr3t-value-123"


def test_secrets_reach_the_job_only_and_server_environment_does_not(
    client: TestClient[Any], auth: dict[str, str], services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVER_ONLY_CANARY", "must-not-leak")
    source = (
        "import os\n"
        "print('token:', os.environ['API_TOKEN'])\n"
        "print('keys:', ','.join(sorted(os.environ)))\n"
    )
    body = job(source)
    body["spec"]["secrets"] = {"API_TOKEN": SECRET}
    resp = client.post(SUBMIT, json=body, headers=auth)
    assert resp.status_code == 202, resp.text
    assert SECRET not in resp.text
    run_id = resp.json()["run_id"]
    run = wait_for_status(client, run_id, auth)
    assert run["status"] == "completed", run

    text = logs(client, run_id, auth)
    assert "token: ***" in text
    assert SECRET not in text
    for url in (f"/api/v1/runs/{run_id}", "/api/v1/runs"):
        got = client.get(url, headers=auth)
        assert got.status_code == 200
        assert SECRET not in got.text

    with psycopg.connect(services.dsn) as conn:
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'controlroom_events'"
        )}
        assert {"originator_id", "topic", "state"} <= columns
        stored = conn.execute(
            "SELECT count(*) FROM controlroom_events WHERE originator_id = %s", (UUID(run_id),)
        ).fetchone()
        assert stored and stored[0] > 0
        # positive control: the search below does find text that is in the stored state
        named = conn.execute(
            "SELECT count(*) FROM controlroom_events WHERE originator_id = %s"
            " AND position(%s::bytea IN state) > 0", (UUID(run_id), b"API_TOKEN"),
        ).fetchone()
        assert named and named[0] > 0
        for table in ("controlroom_events", "controlroom_snapshots"):
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                continue
            leaks = conn.execute(
                f"SELECT count(*) FROM {table} WHERE position(%s::bytea IN state) > 0",
                (SECRET.encode(),),
            ).fetchone()
            assert leaks == (0,), f"secret found in {table}"

    keys_line = next(line for line in text.splitlines() if line.startswith("keys: "))
    job_keys = set(keys_line.removeprefix("keys: ").split(","))
    assert "API_TOKEN" in job_keys
    assert "DATABASE_URL" not in job_keys
    assert "SERVER_ONLY_CANARY" not in job_keys
    given = {"HOME", "PYTHONUNBUFFERED", "API_TOKEN", "CONTROLROOM_URL", "CONTROLROOM_RUN_ID",
             "CONTROLROOM_ATTEMPT", "LC_CTYPE", *PASSTHROUGH_ENV}
    leaked = {k for k in job_keys if k in os.environ and k not in given}
    assert not leaked, f"server environment reached the job: {sorted(leaked)}"


def test_a_nul_byte_in_job_output_is_replaced_and_the_service_carries_on(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    source = "import sys\nsys.stdout.write('before\\x00after\\n')\n"
    run_id = client.post("/api/v1/jobs/run", json=job(source), headers=auth).json()["run_id"]
    assert wait_for_status(client, run_id, auth)["status"] == "completed"
    assert "before\ufffdafter" in client.get(f"/api/v1/runs/{run_id}/logs", headers=auth).text
    follow_up = client.post("/api/v1/jobs/run", json=job("print('next')"), headers=auth)
    assert client.get(f"/api/v1/runs/{follow_up.json()['run_id']}", headers=auth).status_code == 200


def test_a_retried_submission_is_replayed_even_if_it_would_no_longer_validate(
    client: TestClient[Any], auth: dict[str, str], services: Any
) -> None:
    put = client.put("/api/v1/connections/warehouse", json={"dsn": services.dsn}, headers=auth)
    assert put.status_code in (200, 201), put.text
    # kb_catalog connects to its inputs itself: without the connection it no longer validates.
    body = job("", job_type="kb_catalog", spec={"inputs": ["warehouse://public"]})
    headers = {**auth, "Idempotency-Key": "replay-after-change"}
    first = client.post("/api/v1/jobs/run", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert client.delete("/api/v1/connections/warehouse", headers=auth).status_code in (200, 204)
    assert client.post("/api/v1/jobs/run", json=body, headers=auth).status_code == 422
    again = client.post("/api/v1/jobs/run", json=body, headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
