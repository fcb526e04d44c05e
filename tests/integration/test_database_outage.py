"""The database goes away while jobs run: fencing holds and every run still ends recorded.

A PostgreSQL 15 cluster of the test's own is stopped (fast shutdown, every connection cut)
and started again on the same port while an in-process service with a worker runs jobs.
The job processes on the host are sampled every 100 ms by the run id and attempt in their
environment: at no instant may two attempts of one run be alive.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import bootstrap, build_app
from controlroom.commands.reaper import LeaseTiming
from controlroom.settings import Settings
from tests.conftest import job, wait_for_status
from tests.job_processes import processes_of
from tests.pg15_cluster import MISSING, Cluster, available

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not available(), reason=MISSING)]

LEASE_TIMEOUT_S = 6.0
TIMING = LeaseTiming.of(LEASE_TIMEOUT_S).check()
LINES = 40
JOB = (
    "import os, time\n"
    f"for i in range({LINES}):\n"
    "    print(f'line {i}', flush=True)\n"
    f"    print(f'::progress {{i * 100 / {LINES}:.1f}}', flush=True)\n"
    "    time.sleep(0.5)\n"
)
"""About 20 s of output, a line and a progress step every half second."""


class Sampler:
    """Every 100 ms: which attempts of which runs have a live process on the host."""

    def __init__(self) -> None:
        self.overlaps: list[tuple[str, set[str]]] = []
        self.seen: dict[str, set[str]] = defaultdict(set)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            live: dict[str, set[str]] = defaultdict(set)
            for pid_dir in Path("/proc").iterdir():
                if not pid_dir.name.isdigit():
                    continue
                try:
                    environ = (pid_dir / "environ").read_bytes().split(b"\0")
                    state = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
                except (OSError, IndexError):
                    continue
                if state == "Z":
                    continue  # dead, only not yet collected
                env = dict(e.split(b"=", 1) for e in environ if b"=" in e)
                run_id, attempt = env.get(b"CONTROLROOM_RUN_ID"), env.get(b"CONTROLROOM_ATTEMPT")
                if run_id and attempt:
                    live[run_id.decode()].add(attempt.decode())
            for run_id, attempts in live.items():
                self.seen[run_id] |= attempts
                if len(attempts) > 1:
                    self.overlaps.append((run_id, attempts))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.remove()


@pytest.fixture(scope="module")
def client_and_auth(cluster: Cluster) -> Iterator[tuple[TestClient[Any], dict[str, str]]]:
    name = f"controlroom_outage_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    data_dir = Path(tempfile.mkdtemp(prefix="controlroom-outage-"))
    settings = Settings(
        database_url=cluster.dsn.rsplit("/", 1)[0] + f"/{name}", data_dir=data_dir,
        jwt_secret=uuid.uuid4().hex * 2, worker_slots=4, lease_timeout_s=LEASE_TIMEOUT_S,
    )
    try:
        with bootstrap(settings) as services, TestClient(build_app(services)) as client:
            token = issue_token(services.jwt_secret, tenant="outage", sub="alice",
                                scopes=ALL_SCOPES, ttl_s=3600)
            yield client, {"Authorization": f"Bearer {token}"}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _submit(client: TestClient[Any], auth: dict[str, str], n: int) -> list[str]:
    ids = []
    for _ in range(n):
        resp = client.post("/api/v1/jobs/run", json=job(JOB, max_retries=3), headers=auth)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["run_id"])
    return ids


def _wait_running(run_ids: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(processes_of(r) for r in run_ids):
        assert time.monotonic() < deadline, "jobs did not start"
        time.sleep(0.1)
    time.sleep(1.5)  # some output recorded before the outage


def test_an_outage_longer_than_the_lease_never_runs_two_attempts_at_once(
    cluster: Cluster, client_and_auth: tuple[TestClient[Any], dict[str, str]],
) -> None:
    client, auth = client_and_auth
    run_ids = _submit(client, auth, 3)
    with Sampler() as sampler:
        _wait_running(run_ids)
        cluster.stop()
        time.sleep(LEASE_TIMEOUT_S * 2.5)  # well past the lease: every attempt is fenced
        fenced = [r for r in run_ids if not processes_of(r)]
        cluster.start()
        runs = [wait_for_status(client, r, auth, timeout=180) for r in run_ids]
    assert not sampler.overlaps, f"two attempts alive at once: {sampler.overlaps[:5]}"
    assert fenced == run_ids, "a job kept running without its lease"
    for run in runs:
        assert run["status"] == "completed", run
        assert run["attempt"] >= 2, run  # the fenced attempt was retried
    for r in run_ids:
        assert len(sampler.seen[r]) >= 2, sampler.seen[r]


def test_an_outage_shorter_than_the_lease_leaves_jobs_running_and_their_output_in_order(
    cluster: Cluster, client_and_auth: tuple[TestClient[Any], dict[str, str]],
) -> None:
    client, auth = client_and_auth
    run_ids = _submit(client, auth, 3)
    with Sampler() as sampler:
        _wait_running(run_ids)
        cluster.stop()
        time.sleep(TIMING.certain_s / 2)
        assert all(processes_of(r) for r in run_ids), "a job was stopped during a short outage"
        cluster.start()
        runs = [wait_for_status(client, r, auth, timeout=120) for r in run_ids]
    assert not sampler.overlaps, f"two attempts alive at once: {sampler.overlaps[:5]}"
    for run, r in zip(runs, run_ids, strict=True):
        assert run["status"] == "completed" and run["attempt"] == 1, run
        logs = client.get(f"/api/v1/runs/{r}/logs", headers=auth).text.splitlines()
        assert [line for line in logs if line.startswith("line ")] == [
            f"line {i}" for i in range(LINES)], logs
