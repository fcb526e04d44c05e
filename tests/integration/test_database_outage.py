"""The database goes away while jobs run: fencing holds and every run still ends recorded.

A PostgreSQL 15 cluster of the test's own is stopped (fast shutdown, every connection cut)
and started again on the same port while an in-process service with a worker runs jobs.
The job processes on the host are sampled every 100 ms by the run id and attempt in their
environment: at no instant may two attempts of one run be alive.

Jobs that end while the database is away have their output and outcome spooled on the
worker's disk and recorded, exactly once and in order, when it returns — by the same worker,
or by the next one started on the data dir when the first was killed meanwhile. The lease
store's own connection comes back by itself after the restart.
"""

from __future__ import annotations

import os
import shutil
import signal
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

from controlroom.adapters.execution.leases import PostgresLeases
from controlroom.adapters.postgres.database import operations_pool
from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services, bootstrap, build_app
from controlroom.commands.execution.reaper import LeaseTiming
from controlroom.commands.retrying import is_unavailable
from controlroom.domain.runs.run import Run
from controlroom.settings import Settings
from tests.conftest import job, wait_for_status, wait_until
from tests.job_gate import JobGate
from tests.job_processes import processes_of
from tests.pg15_cluster import MISSING, Cluster, available
from tests.worker_processes import (
    forget_namespace,
    needs_redis,
    redis_settings,
    run_events,
    worker_pool,
)

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


def _database(cluster: Cluster) -> str:
    name = f"controlroom_outage_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster.dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="controlroom-outage-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def database_url(cluster: Cluster) -> str:
    return _database(cluster)


@pytest.fixture(scope="module")
def service(
    database_url: str, data_dir: Path,
) -> Iterator[tuple[Services, TestClient[Any], dict[str, str]]]:
    settings = Settings(
        database_url=database_url, data_dir=data_dir,
        jwt_secret=uuid.uuid4().hex * 2, worker_slots=4, lease_timeout_s=LEASE_TIMEOUT_S,
    )
    with bootstrap(settings) as services, TestClient(build_app(services)) as client:
        token = issue_token(services.jwt_secret, tenant="outage", sub="alice",
                            scopes=ALL_SCOPES, ttl_s=3600)
        yield services, client, {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def client_and_auth(
    service: tuple[Services, TestClient[Any], dict[str, str]],
) -> tuple[TestClient[Any], dict[str, str]]:
    return service[1], service[2]


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


GATED_LINES = 10


def _gated_job(gate: JobGate, exit_code: int) -> str:
    """Ten lines and progress steps, the gate, ten more, then exit with `exit_code`."""
    def lines(start: int) -> str:
        return (f"for i in range({start}, {start + GATED_LINES}):\n"
                "    print(f'line {i}', flush=True)\n"
                f"    print(f'::progress {{i * 5}} step {{i}}', flush=True)\n")
    return ("import sys\n" + lines(0) + gate.source() + lines(GATED_LINES)
            + f"sys.exit({exit_code})\n")


def _spooled(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "spool").glob("*.spool"))


def _assert_output_once_in_order(
    services: Services, client: TestClient[Any], auth: dict[str, str], run_id: str,
) -> None:
    logs = client.get(f"/api/v1/runs/{run_id}/logs", headers=auth).text.splitlines()
    assert [line for line in logs if line.startswith("line ")] == [
        f"line {i}" for i in range(2 * GATED_LINES)], logs
    steps = [e.message for e in run_events(services, run_id) if isinstance(e, Run.RunProgressed)]
    assert steps == [f"step {i}" for i in range(2 * GATED_LINES)], steps


def test_jobs_that_end_while_the_database_is_away_are_recorded_with_their_real_exit_codes(
    cluster: Cluster, service: tuple[Services, TestClient[Any], dict[str, str]], data_dir: Path,
) -> None:
    services, client, auth = service
    with JobGate() as ok_gate, JobGate() as failing_gate:
        ok = client.post("/api/v1/jobs/run", json=job(_gated_job(ok_gate, 0)), headers=auth)
        failing = client.post("/api/v1/jobs/run", json=job(_gated_job(failing_gate, 3)),
                              headers=auth)
        assert ok.status_code == failing.status_code == 202, (ok.text, failing.text)
        run_ids = [ok.json()["run_id"], failing.json()["run_id"]]
        ok_gate.arrived()
        failing_gate.arrived()
        time.sleep(1.0)  # the first half of the output recorded before the outage
        cluster.stop()
        try:
            ok_gate.open()
            failing_gate.open()
            wait_until(lambda: not any(processes_of(r) for r in run_ids), timeout=10,
                       what="the jobs to end during the outage")
            # Both outcomes wait on the worker's disk, not in the lost-worker path.
            # The first try at the database waits out its pool (5 s) before output is spooled.
            wait_until(lambda: len(_spooled(data_dir)) == 2, timeout=15, what="two spools")
            time.sleep(1.0)
        finally:
            cluster.start()
    completed, failed = (wait_for_status(client, r, auth, timeout=60) for r in run_ids)
    assert completed["status"] == "completed" and completed["exit_code"] == 0, completed
    assert completed["attempt"] == 1, completed
    assert failed["status"] == "failed" and failed["exit_code"] == 3, failed
    assert failed["error"]["reason"] == "exit_code", failed
    for r in run_ids:
        _assert_output_once_in_order(services, client, auth, r)
    wait_until(lambda: not _spooled(data_dir), timeout=10, what="the spools to be removed")


def test_the_lease_connection_recovers_by_itself_after_a_database_restart(
    cluster: Cluster, database_url: str, client_and_auth: tuple[TestClient[Any], dict[str, str]],
) -> None:
    pool = operations_pool(database_url, 1)
    leases = PostgresLeases(pool)  # client_and_auth: the schema is in place
    run_id, worker = uuid.uuid4(), f"lease-test-{uuid.uuid4().hex[:6]}"
    try:
        assert leases.take(run_id, 1, worker, 30.0)
        assert leases.renew(run_id, 1, worker, 30.0)  # a pooled connection, now open
        cluster.stop()
        try:
            with pytest.raises(Exception) as away:
                leases.renew(run_id, 1, worker, 30.0)
            assert is_unavailable(away.value), away.value
        finally:
            cluster.start()
        assert wait_until(lambda: _renews(leases, run_id, worker), timeout=15,
                          what="the lease connection to come back")
        assert not leases.renew(run_id, 1, "someone-else", 30.0)
    finally:
        leases.release(run_id, 1, worker)
        pool.close()


def _renews(leases: PostgresLeases, run_id: uuid.UUID, worker: str) -> bool:
    try:
        return leases.renew(run_id, 1, worker, 30.0)
    except Exception as e:
        assert is_unavailable(e), e
        return False


@needs_redis
def test_a_spool_left_by_a_killed_worker_is_recorded_by_the_next_worker(
    cluster: Cluster, tmp_path: Path,
) -> None:
    settings = redis_settings(_database(cluster), tmp_path / "data")
    settings.lease_timeout_s = LEASE_TIMEOUT_S
    # The reaper must not call the killed worker's attempt lost before the next worker starts.
    settings.lease_reap_grace_s = 60.0
    try:
        with bootstrap(settings, run_worker=False) as services, \
                TestClient(build_app(services)) as client, \
                worker_pool(settings, tmp_path) as start_worker, JobGate() as gate:
            token = issue_token(services.jwt_secret, tenant="outage", sub="alice",
                                scopes=ALL_SCOPES, ttl_s=3600)
            auth = {"Authorization": f"Bearer {token}"}
            first = start_worker(processes=1, threads=1)
            resp = client.post("/api/v1/jobs/run", json=job(_gated_job(gate, 0)), headers=auth)
            assert resp.status_code == 202, resp.text
            run_id = resp.json()["run_id"]
            gate.arrived()
            time.sleep(1.0)
            cluster.stop()
            try:
                gate.open()
                wait_until(lambda: not processes_of(run_id), timeout=10, what="the job's end")
                wait_until(lambda: _spooled(settings.data_dir), timeout=15, what="a spool")
                time.sleep(1.0)  # the outcome spooled after the output
                os.killpg(first.proc.pid, signal.SIGKILL)
                first.proc.wait(10)
            finally:
                cluster.start()
            assert _spooled(settings.data_dir), "the killed worker's spool is gone"
            assert client.get(f"/api/v1/runs/{run_id}", headers=auth).json()["status"] == "running"
            second = start_worker(processes=1, threads=1)
            run = wait_for_status(client, run_id, auth, timeout=60)
            assert run["status"] == "completed" and run["exit_code"] == 0, (run, second.output())
            assert run["attempt"] == 1, run
            _assert_output_once_in_order(services, client, auth, run_id)
            wait_until(lambda: not _spooled(settings.data_dir), timeout=10, what="spool removed")
    finally:
        forget_namespace(settings)
