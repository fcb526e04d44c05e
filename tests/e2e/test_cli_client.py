"""`controlroom submit` and `controlroom runs watch` as a CI pipeline runs them: real processes
against the real `controlroom serve`, with real jobs; exit codes 0/1/2/3/4 and `--json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlroom.api.auth import ALL_SCOPES, issue_token
from tests.conftest import job
from tests.live_events import ServeProcess

pytestmark = pytest.mark.slow

API = "/api/v1"
SECRET = "cli-" + uuid.uuid4().hex
CLI_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def server(make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServeProcess]:
    s = ServeProcess(make_server_database(), tmp_path_factory.mktemp("cli"), jwt_secret=SECRET)
    try:
        yield s.wait_ready()
    finally:
        s.stop()


@pytest.fixture
def env(server: ServeProcess, tenant: str) -> dict[str, str]:
    token = issue_token(SECRET, tenant=tenant, sub="ci", scopes=ALL_SCOPES, ttl_s=600)
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CONTROLROOM_")},
            "CONTROLROOM_URL": server.base_url, "CONTROLROOM_TOKEN": token}


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controlroom.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "controlroom.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def job_file(tmp_path: Path, source: str) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job(source)))
    return str(path)


def api(env: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=env["CONTROLROOM_URL"], timeout=30,
                        headers={"Authorization": f"Bearer {env['CONTROLROOM_TOKEN']}"})


def wait_running(env: dict[str, str], run_id: str) -> None:
    with api(env) as http:
        deadline = time.monotonic() + 30
        while http.get(f"{API}/runs/{run_id}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)


SLEEPER = "import time\nprint('::progress 10 sleeping', flush=True)\ntime.sleep(60)\n"


def test_submit_wait_exits_0_when_the_run_completes_and_json_prints_one_event_per_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    source = "print('::progress 50 halfway', flush=True)\nprint('hello from the job')\n"
    done = cli(env, "submit", job_file(tmp_path, source), "--wait", "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    types = [e.get("type") or e["event"] for e in lines]
    assert types[0] == "submitted" and types[-2:] == ["completed", "end"], types
    assert {"started", "progress", "log"} <= set(types)
    versions = [e["version"] for e in lines[:-1]]
    assert versions == list(range(1, len(versions) + 1))
    assert any("hello from the job" in e["data"].get("text", "") for e in lines if e.get("type") == "log")
    assert lines[-1] == {"event": "end", "run_id": lines[0]["run_id"], "status": "completed",
                         "version": versions[-1]}


def test_submit_wait_exits_1_when_the_run_fails_and_shows_its_log_as_plain_lines(
    env: dict[str, str], tmp_path: Path
) -> None:
    source = "import sys\nprint('about to fail')\nsys.exit(3)\n"
    done = cli(env, "submit", job_file(tmp_path, source), "--wait")
    assert done.returncode == 1, done.stderr
    assert "about to fail" in done.stdout and "failed: exit_code" in done.stdout
    assert done.stdout.rstrip().endswith("failed")


def test_a_retried_run_is_followed_through_its_retry_to_the_final_failure(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job("import sys\nsys.exit(2)\n", max_retries=1)))
    done = cli(env, "submit", str(path), "--wait", "--json")
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    status = [(e["type"], e["data"].get("attempt"), e["data"].get("retrying"))
              for e in lines if e.get("event") == "status"]
    assert status == [("submitted", 1, None), ("started", 1, None), ("failed", None, True),
                      ("retry_scheduled", 2, None), ("started", 2, None), ("failed", None, False)]
    assert lines[-1]["event"] == "end" and lines[-1]["status"] == "failed"


def test_runs_watch_exits_2_when_the_run_is_cancelled(env: dict[str, str], tmp_path: Path) -> None:
    submitted = cli(env, "submit", job_file(tmp_path, SLEEPER))
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    wait_running(env, run_id)
    watcher = start(env, "runs", "watch", run_id)
    with api(env) as http:
        assert http.post(f"{API}/runs/{run_id}/cancel").status_code == 202
    out, err = watcher.communicate(timeout=CLI_TIMEOUT_S)
    assert watcher.returncode == 2, err
    assert "[ 10%] sleeping" in out and out.rstrip().endswith(f"run {run_id} cancelled")


def test_timeout_exits_3_and_leaves_the_run_going(env: dict[str, str], tmp_path: Path) -> None:
    started = time.monotonic()
    done = cli(env, "submit", job_file(tmp_path, SLEEPER), "--wait", "--timeout", "2", "--json")
    assert done.returncode == 3, done.stderr
    assert 2 <= time.monotonic() - started < 15 and "timed out after 2s" in done.stderr
    run_id = json.loads(done.stdout.splitlines()[0])["run_id"]
    watched = cli(env, "runs", "watch", run_id, "--timeout", "1")
    assert watched.returncode == 3
    with api(env) as http:
        assert http.get(f"{API}/runs/{run_id}").json()["status"] in ("queued", "running")
        http.post(f"{API}/runs/{run_id}/cancel")


def test_errors_exit_4_with_a_message(env: dict[str, str], tmp_path: Path) -> None:
    missing = cli(env, "runs", "watch", str(uuid.uuid4()))
    assert missing.returncode == 4 and "HTTP 404" in missing.stderr
    no_token = cli({**env, "CONTROLROOM_TOKEN": ""}, "runs", "watch", str(uuid.uuid4()))
    assert no_token.returncode == 4 and "no token" in no_token.stderr
    bad = cli(env, "submit", "-", "--wait", stdin="{not json")
    assert bad.returncode == 4 and "HTTP 400" in bad.stderr
    unreadable = cli(env, "submit", str(tmp_path / "nope.json"))
    assert unreadable.returncode == 4 and "cannot read" in unreadable.stderr


def test_watch_resumes_after_the_server_restarts_and_repeats_no_event(
    make_server_database: Callable[[], str], tmp_path: Path, env: dict[str, str]
) -> None:
    """The stream drops (server restarted on the same port): the CLI reconnects with its last id."""
    dsn, data = make_server_database(), tmp_path / "data"
    data.mkdir()
    first = ServeProcess(dsn, data, jwt_secret=SECRET, extra_args=["--no-worker"]).wait_ready()
    env = {**env, "CONTROLROOM_URL": first.base_url}
    second = None
    try:
        with api(env) as http:
            run_id = http.post(f"{API}/jobs/run", json=job("print(1)")).json()["run_id"]
            post = [{"event_type": "log", "text": f"line {i}"} for i in range(3)]
            assert http.post(f"{API}/runs/{run_id}/events", json=post).status_code == 202
            watcher = start(env, "runs", "watch", run_id, "--json")
            assert watcher.stdout is not None
            seen = [json.loads(watcher.stdout.readline()) for _ in range(4)]
            assert first.stop() == 0
            second = ServeProcess(dsn, data, jwt_secret=SECRET, extra_args=["--no-worker"],
                                  port=first.port).wait_ready()
            assert http.post(f"{API}/runs/{run_id}/events", json=post).status_code == 202
            assert http.post(f"{API}/runs/{run_id}/cancel").status_code == 202
        out, err = watcher.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    lines: list[dict[str, Any]] = seen + [json.loads(line) for line in out.splitlines()]
    assert watcher.returncode == 2, err
    assert "reconnecting" in err
    assert [e["version"] for e in lines[:-1]] == list(range(1, 10))
    assert lines[-1]["event"] == "end"
