"""Jobs report through the SDK with their run token, and their outputs become artifacts.

The SDK in a job talks HTTP to the API, so these tests serve the app for real (uvicorn on
a free port, in a thread) over their own database, with the in-process worker running
real job subprocesses whose `CONTROLROOM_URL` points at that server. A job hands its token
to the test through a file outside its working directory, so the test can use the very
token the worker minted.
"""

from __future__ import annotations

import ast
import hashlib
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

from controlroom import sdk
from controlroom.adapters.runs.tokens import HmacRunTokens
from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services, bootstrap, build_app
from controlroom.commands.execution import outputs
from controlroom.settings import Settings
from tests.conftest import job, wait_for_status, wait_until
from tests.job_gate import JobGate
from tests.live_events import free_port, serve_in_thread

API = "/api/v1"


@pytest.fixture(scope="module")
def served(
    make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Services, str]]:
    """(services, base url) of an API really listening, whose worker's jobs can reach it."""
    port = free_port()  # the jobs reach the API here, so it is known before it starts
    settings = Settings(
        database_url=make_server_database(), data_dir=tmp_path_factory.mktemp("sdk-data"),
        jwt_secret="sdk-secret-" + uuid.uuid4().hex, port=port, worker_slots=4,
    )
    with bootstrap(settings) as services, serve_in_thread(build_app(services), port) as url:
        yield services, url


def job_outputs(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's artifacts from `output/`, without the code files and log every run keeps."""
    return [a for a in run["artifacts"]
            if not a["path"].startswith("code/") and a["path"] != "logs/run.log"]


@pytest.fixture
def http(served: tuple[Services, str]) -> Iterator[httpx.Client]:
    """A client of the served API."""
    with httpx.Client(base_url=served[1], timeout=30) as c:
        yield c


@pytest.fixture
def user(served: tuple[Services, str], tenant: str) -> dict[str, str]:
    """Authorization for this test's tenant with every scope."""
    token = issue_token(served[0].jwt_secret, tenant=tenant, sub="alice", scopes=ALL_SCOPES, ttl_s=600)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def gate() -> Iterator[JobGate]:
    """A gate for one job (sandboxed jobs see none of the test's files)."""
    with JobGate() as g:
        yield g


def gated(source: str, gate: JobGate, send: str = "''") -> str:
    """Job source that runs `source`, sends `send` to the test and waits until it opens `gate`."""
    return source + "\n" + gate.source(send)


def submit(http: httpx.Client, headers: dict[str, str], source: str) -> str:
    resp = http.post(f"{API}/jobs/run", json=job(source), headers=headers)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


def wait_for(predicate: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


SDK_JOB = """
import os, pathlib
from controlroom import sdk
assert sdk.in_control_room()  # so what follows goes over HTTP, not as control lines
print("my token is", os.environ["CONTROLROOM_TOKEN"])
sdk.progress(40, "loading rows")
sdk.log("hello", "from", 3, "sdk calls")
sdk.lineage("supabase://public.orders", "warehouse.orders_daily")
pathlib.Path("report.csv").write_text("a,b\\n1,2\\n")
assert sdk.artifact("report.csv") == "report.csv"
"""


def test_a_job_using_the_sdk_reports_everything_and_its_token_stays_confined(
    served: tuple[Services, str], http: httpx.Client, user: dict[str, str], tenant: str,
    gate: JobGate,
) -> None:
    services = served[0]
    run_id = submit(http, user, gated(SDK_JOB, gate, send='os.environ["CONTROLROOM_TOKEN"]'))
    other_run = submit(http, user, "print('another run of the same tenant')")
    run_token = gate.arrived()
    # The job's reports are in the log once answered (202); the run shows them a moment later.
    running = wait_until(lambda: (r := http.get(f"{API}/runs/{run_id}", headers=user).json())
                         ["progress"] and r, what="the job's progress to show")
    assert running["status"] == "running"
    assert running["progress"]["percent"] == 40
    assert running["progress"]["message"] == "loading rows"

    as_job = {"Authorization": f"Bearer {run_token}"}
    own = http.post(f"{API}/runs/{run_id}/events", headers=as_job,
                    json={"event_type": "log", "text": f"leaking {run_token}?"})
    assert own.status_code == 202, own.text
    assert http.post(f"{API}/runs/{other_run}/events", headers=as_job,
                     json={"event_type": "progress", "percent": 1}).status_code == 404
    assert http.post(f"{API}/runs/{uuid.uuid4()}/events", headers=as_job,
                     json={"event_type": "progress", "percent": 1}).status_code == 404
    assert http.get(f"{API}/runs", headers=as_job).status_code == 403
    assert http.get(f"{API}/runs/{run_id}", headers=as_job).status_code == 403
    assert http.get(f"{API}/runs/{other_run}", headers=as_job).status_code == 403
    assert http.post(f"{API}/jobs/run", headers=as_job, json=job("print(1)")).status_code == 403
    assert http.post(f"{API}/runs/{run_id}/cancel", headers=as_job).status_code == 403

    gate.open()
    run = wait_for_status(http, run_id, user)  # type: ignore[arg-type]
    assert run["status"] == "completed", run
    logs = http.get(run["logs_url"], headers=user).text
    assert "hello from 3 sdk calls" in logs
    assert "my token is ***" in logs and "leaking ***?" in logs
    assert run_token not in logs
    assert run_token not in http.get(f"{API}/runs/{run_id}", headers=user).text
    assert run_token not in http.get(f"{API}/runs", headers=user).text

    events = list(services.commands.app.repository.event_store.get(uuid.UUID(run_id)))
    edges = [(e.source, e.target) for e in events if type(e).__name__ == "LineageEdgeRecorded"]
    assert edges == [("supabase://public.orders", "warehouse.orders_daily")]
    names = [type(e).__name__ for e in events]
    assert names.index("ArtifactAdded") < names.index("RunCompleted")

    [artifact] = job_outputs(run)
    assert list(artifact)[:2] == ["path", "url"]
    assert artifact["path"] == "report.csv"
    assert artifact["url"] == f"{API}/artifacts/{artifact['artifact_id']}/content"
    assert artifact["content_type"] == "text/csv"
    content = http.get(artifact["url"], headers=user)
    assert content.status_code == 200
    assert content.content == b"a,b\n1,2\n"
    digest = hashlib.sha256(content.content).hexdigest()
    assert artifact["sha256"] == digest and artifact["size"] == 8
    assert content.headers["etag"] == f'"{digest}"'
    assert content.headers["content-length"] == "8"
    assert content.headers["content-type"].startswith("text/csv")
    assert content.headers["x-content-type-options"] == "nosniff"
    # the run has ended: its token can't add anything more
    late = http.post(f"{API}/runs/{run_id}/events", headers=as_job,
                     json={"event_type": "progress", "percent": 99})
    assert late.status_code == 409


def test_a_run_token_for_a_superseded_attempt_is_refused(
    served: tuple[Services, str], http: httpx.Client, user: dict[str, str], tenant: str,
    gate: JobGate,
) -> None:
    run_id = submit(http, user, gated("", gate))
    gate.arrived()
    stale = HmacRunTokens(served[0].jwt_secret).for_run(tenant, uuid.UUID(run_id), 60, attempt=2)
    resp = http.post(f"{API}/runs/{run_id}/events", headers={"Authorization": f"Bearer {stale}"},
                     json={"event_type": "progress", "percent": 5})
    assert resp.status_code == 409, resp.text
    gate.open()
    wait_for_status(http, run_id, user)  # type: ignore[arg-type]


OUTPUT_JOB = """
import os, pathlib
out = pathlib.Path("output")
(out / "sub").mkdir()
(out / "summary.txt").write_text("12 rows\\n")
(out / "sub" / "data.json").write_text('{"rows": 12}')
(out / "sub" / "blob").write_bytes(bytes(range(256)))
os.symlink("/etc/hostname", out / "stolen.txt")
open(b"output/bad-name-\\xff.txt", "wb").write(b"unnamed")
"""


def test_files_written_to_output_become_artifacts(
    served: tuple[Services, str], http: httpx.Client, user: dict[str, str], tenant: str,
) -> None:
    run_id = submit(http, user, OUTPUT_JOB)
    run = wait_for_status(http, run_id, user)  # type: ignore[arg-type]
    assert run["status"] == "completed", run
    found = {a["path"]: a for a in job_outputs(run)}
    assert sorted(found) == ["sub/blob", "sub/data.json", "summary.txt"]  # not the symlink
    assert "is not valid UTF-8" in http.get(run["logs_url"], headers=user).text
    assert found["sub/data.json"]["content_type"] == "application/json"
    assert found["sub/blob"]["content_type"] == "application/octet-stream"
    blob = http.get(found["sub/blob"]["url"], headers=user)
    assert blob.content == bytes(range(256))

    meta = http.get(f"{API}/artifacts/{found['summary.txt']['artifact_id']}", headers=user)
    assert meta.status_code == 200
    assert meta.json()["run_id"] == run_id
    assert meta.json()["size"] == len(b"12 rows\n")
    etag = http.get(found["summary.txt"]["url"], headers=user).headers["etag"]
    assert http.get(found["summary.txt"]["url"],
                    headers={**user, "If-None-Match": etag}).status_code == 304

    listed = http.get(f"{API}/runs", headers=user).json()["runs"]
    assert {a["path"] for a in job_outputs(listed[0])} == set(found)

    secret = served[0].jwt_secret
    stranger = {"Authorization": "Bearer " + issue_token(
        secret, tenant="someone-else", sub="mallory", scopes=ALL_SCOPES, ttl_s=60)}
    no_scope = {"Authorization": "Bearer " + issue_token(
        secret, tenant=tenant, sub="bob", scopes=["runs:read"], ttl_s=60)}
    for url in (meta.url.path, found["summary.txt"]["url"]):
        assert http.get(url, headers=stranger).status_code == 404
        assert http.get(url, headers=no_scope).status_code == 403
    assert http.get(f"{API}/artifacts/{uuid.uuid4()}", headers=user).status_code == 404


def test_a_failed_attempt_keeps_its_outputs(
    http: httpx.Client, user: dict[str, str]
) -> None:
    source = "open('output/debug.log', 'w').write('what went wrong')\nraise SystemExit(2)\n"
    run = wait_for_status(http, submit(http, user, source), user)  # type: ignore[arg-type]
    assert run["status"] == "failed"
    assert [(a["path"], a["content_type"]) for a in job_outputs(run)] == [("debug.log", "text/plain")]


def test_outputs_over_the_limits_are_skipped_with_a_log_line(
    http: httpx.Client, user: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outputs, "MAX_ARTIFACT_BYTES", 100)  # the worker runs in this process
    source = "open('output/big.bin', 'wb').write(b'x' * 101)\nopen('output/ok.txt', 'w').write('ok')\n"
    run = wait_for_status(http, submit(http, user, source), user)  # type: ignore[arg-type]
    assert run["status"] == "completed"
    assert [a["path"] for a in job_outputs(run)] == ["ok.txt"]
    logs = http.get(run["logs_url"], headers=user).text
    assert "output/big.bin skipped" in logs and "per-file limit" in logs


def test_the_sdk_raises_clear_errors_under_control_room(
    served: tuple[Services, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTROLROOM_URL", served[1])
    monkeypatch.setenv("CONTROLROOM_RUN_ID", str(uuid.uuid4()))
    monkeypatch.setenv("CONTROLROOM_TOKEN", "not-a-token")
    with pytest.raises(sdk.ReportRejectedError) as rejected:
        sdk.progress(10, "x")
    assert rejected.value.status == 401
    assert "not-a-token" not in str(rejected.value)
    monkeypatch.setenv("CONTROLROOM_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(sdk, "BACKOFF_S", 0.01)
    with pytest.raises(sdk.ControlRoomUnavailableError):
        sdk.lineage("a.b", "c.d")
    with pytest.raises(ValueError):
        sdk.progress(101)


def test_outside_control_room_the_sdk_prints_control_lines(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLROOM_")}
    (tmp_path / "chart.svg").write_text("<svg/>")
    code = ("from controlroom import sdk\n"
            "sdk.progress(40, 'loading rows')\nsdk.progress(12.5)\n"
            "sdk.lineage('supabase://public.orders', 'warehouse.daily')\n"
            "sdk.log('done', 3)\nprint(sdk.artifact('chart.svg', 'charts/c.svg'))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert out.splitlines() == [
        "::progress 40 loading rows", "::progress 12.5",
        "::lineage supabase://public.orders warehouse.daily", "done 3", "charts/c.svg",
    ]
    assert (tmp_path / "output" / "charts" / "c.svg").read_text() == "<svg/>"


def test_the_sdk_needs_nothing_but_the_standard_library() -> None:
    tree = ast.parse(Path(sdk.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
