"""Each process stays within its PostgreSQL connection budget, under load.

Real `controlroom serve`, `worker` and `projector` processes on a database of their own; while
clients submit runs, post events and read them back, `pg_stat_activity` is sampled every 0.1 s
and counted per process (each names its connections `controlroom-<kind>:<pid>`). Every
process states its budget when it starts; the peak seen must be within it, and the budget
within the documented default (serve 10, worker 3, projector 4).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from controlroom.api.auth import ALL_SCOPES, issue_token
from tests.conftest import job
from tests.worker_processes import REDIS_URL, needs_redis

pytestmark = pytest.mark.slow
CLIENTS = 12
RUNS_PER_CLIENT = 6
SAMPLE_S = 0.1
BUDGET_LINE = re.compile(r"at most (\d+) PostgreSQL connections")
DEFAULTS = {"serve": 10, "worker": 3, "projector": 4}


class Process:
    """One Control Room command, its output kept for the budget it states."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "controlroom.cli", *args], env=env,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def stated_budget(self) -> int:
        deadline = time.monotonic() + 60
        while not (found := BUDGET_LINE.search(self.log.read_text(errors="replace"))):
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "no connection budget was stated at start"
            time.sleep(0.1)
        return int(found.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Sampler:
    """The most connections each process held at once, by its connections' name."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.peaks: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True, application_name="budget-test") as conn:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT application_name FROM pg_stat_activity WHERE datname = "
                    "current_database() AND application_name LIKE 'controlroom-%%'").fetchall()
                now = Counter(int(name.rsplit(":", 1)[1]) for (name,) in rows)
                for pid, count in now.items():
                    self.peaks[pid] = max(self.peaks[pid], count)
                self._stop.wait(SAMPLE_S)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def environment(dsn: str, data_dir: Path, port: int, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CONTROLROOM_") and k not in ("PGAPPNAME", "REDIS_URL")}
    return {**env, "DATABASE_URL": dsn, "CONTROLROOM_DATA_DIR": str(data_dir),
            "CONTROLROOM_PORT": str(port), "CONTROLROOM_JWT_SECRET": secret,
            "CONTROLROOM_SECRET_KEY": uuid.uuid4().hex, "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(url: str, secret: str) -> None:
    """Clients submitting runs, posting events to them and reading them, until all finished."""
    token = issue_token(secret, tenant="budget", sub="alice", scopes=ALL_SCOPES, ttl_s=600)

    def client(_: int) -> list[str]:
        ids = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as http:
            for _ in range(RUNS_PER_CLIENT):
                resp = http.post("/api/v1/jobs/run", json=job("print('hello')"))
                assert resp.status_code == 202, resp.text
                run_id = resp.json()["run_id"]
                ids.append(run_id)
                events = [{"event_type": "log", "stream": "stdout", "text": f"line {i}\n"}
                          for i in range(20)]
                assert http.post(f"/api/v1/runs/{run_id}/events",
                                 json=events).status_code in (202, 409)
                assert http.get(f"/api/v1/runs/{run_id}").status_code == 200
                assert http.get("/api/v1/runs", params={"limit": 20}).status_code == 200
        return ids

    with ThreadPoolExecutor(CLIENTS) as pool:
        ids = [i for batch in pool.map(client, range(CLIENTS)) for i in batch]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        deadline = time.monotonic() + 120
        for run_id in ids:
            while http.get(f"/api/v1/runs/{run_id}").json()["status"] not in (
                    "completed", "failed", "cancelled"):
                assert time.monotonic() < deadline, f"run {run_id} never finished"
                time.sleep(0.2)


def wait_ready(url: str, proc: Process) -> None:
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        assert proc.proc.poll() is None, proc.log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "the service never became ready"
        time.sleep(0.2)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    processes: list[Process] = []

    def start(args: list[str], env: dict[str, str]) -> Process:
        processes.append(Process(args, env, tmp_path / f"{args[0]}-{len(processes)}.log"))
        return processes[-1]

    yield start
    for p in processes:
        p.stop()


def check(sampler: Sampler, process: Process, kind: str) -> None:
    budget = process.stated_budget()
    assert budget <= DEFAULTS[kind], f"{kind} states a budget of {budget}"
    peak = sampler.peaks[process.proc.pid]
    assert 0 < peak <= budget, f"{kind} held {peak} connections at once; its budget is {budget}"


def test_a_serve_with_its_worker_and_read_models_stays_within_ten_connections(
    make_server_database: Callable[[], str], tmp_path: Path, started: Callable[..., Process],
) -> None:
    dsn, port, secret = make_server_database(), free_port(), uuid.uuid4().hex * 2
    serve = started(["serve"], environment(dsn, tmp_path / "data", port, secret))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, serve)
    with Sampler(dsn) as sampler:
        load(url, secret)
    check(sampler, serve, "serve")


@needs_redis
def test_a_worker_and_a_projector_stay_within_three_and_four(
    make_server_database: Callable[[], str], tmp_path: Path, started: Callable[..., Process],
) -> None:
    dsn, port, secret = make_server_database(), free_port(), uuid.uuid4().hex * 2
    env = {**environment(dsn, tmp_path / "data", port, secret), "REDIS_URL": REDIS_URL or "",
           "CONTROLROOM_REDIS_NAMESPACE": f"controlroom-budget-{uuid.uuid4().hex[:8]}"}
    api = started(["serve", "--no-worker", "--no-projections"], env)
    projector = started(["projector"], env)
    worker = started(["worker", "--threads", "2"], env)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, api)
    for p in (projector, worker):
        p.stated_budget()  # started: its pools are open
    with Sampler(dsn) as sampler:
        load(url, secret)
    check(sampler, worker, "worker")
    check(sampler, projector, "projector")
    check(sampler, api, "serve")
