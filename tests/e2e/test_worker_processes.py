"""Real `controlroom worker` processes on a real Redis: runs dispatched through dramatiq, and
workers that die or are stopped (leases, the reaper, retries, graceful shutdown).

The API, the projections, the dispatcher and the reaper run in this process (bootstrapped with
REDIS_URL, no worker, a 3 s lease timeout), so nothing here executes a job except the worker
subprocesses. Jobs are found on the host by the run id in their environment (a sandboxed
job's own pids are its namespace's); a job dies with a SIGKILLed worker, as a machine that
died would take it along.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from controlroom.adapters.execution.dramatiq_queue import QUEUE_NAME, DramatiqQueue
from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services, bootstrap, build_app
from controlroom.commands.execution.reaper import MAX_REAP_INTERVAL_S, LeaseTiming
from controlroom.settings import Settings
from tests.conftest import job, wait_for_status, wait_until
from tests.job_processes import processes_of
from tests.worker_processes import (
    LEASE_TIMEOUT_S,
    Worker,
    event_names,
    forget_namespace,
    kill_group,
    needs_redis,
    redis_settings,
    run_events,
    worker_pool,
)

pytestmark = [needs_redis, pytest.mark.slow]
RUN_TIMEOUT_S = 30.0
REAP_WITHIN_S = (LeaseTiming.of(LEASE_TIMEOUT_S).reap_grace_s + LEASE_TIMEOUT_S
                 + min(MAX_REAP_INTERVAL_S, LEASE_TIMEOUT_S / 3) + 1.0)
"""Lease expiry, the reaper's grace, the next sweep, and a second of slack for a loaded machine."""
SHUTDOWN_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def settings(make_server_database: Callable[[], str]) -> Iterator[Settings]:
    data_dir = Path(tempfile.mkdtemp(prefix="controlroom-workers-"))
    s = redis_settings(make_server_database(), data_dir)
    try:
        yield s
    finally:
        forget_namespace(s)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def services(settings: Settings) -> Iterator[Services]:
    with bootstrap(settings, run_worker=False) as s:
        yield s


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[TestClient[Any]]:
    with TestClient(build_app(services)) as c:
        yield c


@pytest.fixture
def auth(services: Services, tenant: str) -> dict[str, str]:
    token = issue_token(services.jwt_secret, tenant=tenant, sub="alice", scopes=ALL_SCOPES, ttl_s=600)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def run_ids() -> Iterator[list[str]]:
    """Runs the test starts: whatever is left of their jobs is killed after the test."""
    started: list[str] = []
    yield started
    for run_id in started:
        for pid in processes_of(run_id):
            kill_group(pid)


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    with worker_pool(settings, tmp_path) as start:
        yield start


def _long_on_first_attempt() -> str:
    """Attempt 1 sleeps; any later attempt finishes at once."""
    return (
        "import os, time\n"
        "attempt = os.environ['CONTROLROOM_ATTEMPT']\n"
        "print('attempt', attempt, flush=True)\n"
        "if attempt == '1':\n"
        "    time.sleep(120)\n"
    )


def _started(services: Services, run_id: str) -> list[Any]:
    return [e for e in run_events(services, run_id) if type(e).__name__ == "RunStarted"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _pid_of(worker_id: str) -> int:
    match = re.fullmatch(r".+:(\d+)", worker_id)
    assert match, worker_id
    return int(match[1])


def test_a_killed_worker_is_reaped_and_its_retry_completes_on_another_process(
    client: TestClient[Any], auth: dict[str, str], services: Services, run_ids: list[str],
    start_worker: Callable[..., Worker],
) -> None:
    body = job(_long_on_first_attempt(), max_retries=1)
    resp = client.post("/api/v1/jobs/run", json=body, headers=auth)
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    run_ids.append(run_id)
    workers = start_worker(processes=2, threads=1)

    job_pids = wait_until(lambda: processes_of(run_id, 1), RUN_TIMEOUT_S,
                          f"attempt 1 to start{workers.output()}")
    first = _started(services, run_id)
    assert len(first) == 1 and first[0].attempt == 1
    doomed = _pid_of(first[0].worker_id)
    assert doomed != workers.proc.pid, "the job should run in a child of the supervisor"

    os.kill(doomed, signal.SIGKILL)  # as if the machine died: its job dies with the worker
    killed_at = time.monotonic()
    wait_until(lambda: not any(_alive(pid) for pid in job_pids), 5, "the job to die with its worker")

    lost = wait_for_status(client, run_id, auth, statuses={"queued"}, timeout=REAP_WITHIN_S + 1)
    reaped_after = time.monotonic() - killed_at
    assert lost["error"]["reason"] == "worker_lost", lost
    assert lost["attempt"] == 2, lost
    assert reaped_after <= REAP_WITHIN_S, f"reaped after {reaped_after:.1f}s{workers.output()}"

    run = wait_for_status(client, run_id, auth, timeout=RUN_TIMEOUT_S)
    assert run["status"] == "completed", f"{run}{workers.output()}"
    started = _started(services, run_id)
    assert [e.attempt for e in started] == [1, 2]
    assert _pid_of(started[1].worker_id) != doomed  # another worker process ran the retry
    names = [type(e).__name__ for e in run_events(services, run_id)]
    assert names.count("RunFailed") == 1 and names.count("RunCompleted") == 1, names
    assert workers.terminate() == 0, workers.output()


def test_sigterm_stops_taking_work_and_fails_the_running_attempt_as_a_shutdown(
    client: TestClient[Any], auth: dict[str, str], services: Services, run_ids: list[str],
    start_worker: Callable[..., Worker],
) -> None:
    resp = client.post("/api/v1/jobs/run", json=job(_long_on_first_attempt()), headers=auth)
    run_id = resp.json()["run_id"]
    run_ids.append(run_id)
    worker = start_worker()
    wait_until(lambda: processes_of(run_id, 1), RUN_TIMEOUT_S, f"the job to start{worker.output()}")

    t0 = time.monotonic()
    code = worker.terminate(SHUTDOWN_WITHIN_S)
    assert code == 0, f"exit {code} after {time.monotonic() - t0:.1f}s{worker.output()}"
    run = wait_for_status(client, run_id, auth, timeout=5)
    assert run["status"] == "failed", run
    assert run["error"]["reason"] == "worker_shutdown", run


def test_a_worker_that_lost_its_lease_kills_its_job_and_records_nothing_more(
    client: TestClient[Any], auth: dict[str, str], services: Services, run_ids: list[str],
    start_worker: Callable[..., Worker],
) -> None:
    body = job(_long_on_first_attempt(), max_retries=1)
    run_id = client.post("/api/v1/jobs/run", json=body, headers=auth).json()["run_id"]
    run_ids.append(run_id)
    frozen = start_worker(threads=1)
    job_pids = wait_until(lambda: processes_of(run_id, 1), RUN_TIMEOUT_S,
                          f"attempt 1 to start{frozen.output()}")
    wait_until(lambda: "attempt 1" in client.get(f"/api/v1/runs/{run_id}/logs", headers=auth).text,
               RUN_TIMEOUT_S, "the job's output to be recorded")  # nothing left to flush

    os.kill(frozen.proc.pid, signal.SIGSTOP)  # a long pause or a partition: no renewals
    try:
        start_worker(threads=1)  # takes the retry the reaper schedules
        # (not any terminal status: between RunFailed and RunRetryScheduled it reads `failed`)
        run = wait_for_status(client, run_id, auth, statuses={"completed"},
                              timeout=REAP_WITHIN_S + RUN_TIMEOUT_S)
        assert run["attempt"] == 2
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)

    # Back, the worker's next renewal finds its lease gone: it kills the job, records nothing.
    wait_until(lambda: not any(_alive(pid) for pid in job_pids), LEASE_TIMEOUT_S + 5,
               f"the job to die{frozen.output()}")
    wait_until(lambda: "lease lost" in frozen.output(), 5, f"the worker to notice{frozen.output()}")
    names = [type(e).__name__ for e in run_events(services, run_id)]
    assert names[-1] == "RunCompleted", names
    assert frozen.terminate() == 0, frozen.output()


# -- dispatch through dramatiq -------------------------------------------------------------

def _submit(client: TestClient[Any], auth: dict[str, str], source: str, **extra: Any) -> str:
    resp = client.post("/api/v1/jobs/run", json=job(source, **extra), headers=auth)
    assert resp.status_code == 202, resp.text
    run_id: str = resp.json()["run_id"]
    return run_id


def _queued_messages(settings: Settings) -> int:
    with redis.Redis.from_url(settings.redis_url or "") as r:
        return int(r.llen(f"{settings.redis_namespace}:{QUEUE_NAME}"))


def test_a_submitted_job_runs_on_a_worker_process(
    client: TestClient[Any], auth: dict[str, str], services: Services,
    start_worker: Callable[..., Worker],
) -> None:
    run_id = _submit(client, auth, "print('::progress 50 halfway')\nprint('hello from a worker')")
    worker = start_worker()

    run = wait_for_status(client, run_id, auth, timeout=RUN_TIMEOUT_S)
    assert run["status"] == "completed", f"{run}{worker.output()}"
    logs = client.get(f"/api/v1/runs/{run_id}/logs", headers=auth).text
    assert "hello from a worker" in logs.splitlines()
    names = event_names(services, run_id)
    assert names.count("RunStarted") == 1 and names.count("RunProgressed") == 1, names


def test_duplicate_deliveries_of_one_message_run_the_job_once(
    client: TestClient[Any], auth: dict[str, str], services: Services, settings: Settings,
    start_worker: Callable[..., Worker],
) -> None:
    run_id = _submit(client, auth, "import time\nprint('ran once')\ntime.sleep(0.5)")
    wait_until(lambda: _queued_messages(settings) >= 1, 10, "the dispatcher's message")
    queue = DramatiqQueue(settings.redis_url or "", namespace=settings.redis_namespace)
    try:
        message = queue.actor.message(run_id, 1)
        queue.broker.enqueue(message)  # the very same message, twice more
        queue.broker.enqueue(message)
    finally:
        queue.close()
    assert _queued_messages(settings) >= 3
    worker = start_worker(threads=3)  # three threads take the three copies at once

    run = wait_for_status(client, run_id, auth, timeout=RUN_TIMEOUT_S)
    assert run["status"] == "completed", f"{run}{worker.output()}"
    wait_until(lambda: _queued_messages(settings) == 0, 10, "every copy to be consumed")
    logs = client.get(f"/api/v1/runs/{run_id}/logs", headers=auth).text
    assert logs.splitlines().count("ran once") == 1, logs
    assert event_names(services, run_id).count("RunStarted") == 1


def test_a_lost_broker_message_never_loses_the_run(
    client: TestClient[Any], auth: dict[str, str], settings: Settings,
    start_worker: Callable[..., Worker],
) -> None:
    run_id = _submit(client, auth, "print('recovered from the log')")
    wait_until(lambda: _queued_messages(settings) >= 1, 10, "the dispatcher's message")
    with redis.Redis.from_url(settings.redis_url or "") as r:
        r.delete(f"{settings.redis_namespace}:{QUEUE_NAME}")  # Redis lost it
    worker = start_worker()

    # The reaper re-sends a run left queued for a lease timeout; the worker then runs it.
    run = wait_for_status(client, run_id, auth, timeout=LEASE_TIMEOUT_S + RUN_TIMEOUT_S)
    assert run["status"] == "completed", f"{run}{worker.output()}"
    assert "recovered from the log" in client.get(f"/api/v1/runs/{run_id}/logs", headers=auth).text
