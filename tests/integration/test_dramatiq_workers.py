"""Runs dispatched through dramatiq on a real Redis to real `controlroom worker` processes.

The API and projections run in this process (bootstrapped with REDIS_URL and no worker), so
nothing here executes a job except the worker subprocesses.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from controlroom.adapters.dramatiq_queue import QUEUE_NAME, DramatiqQueue
from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services, bootstrap, build_app
from controlroom.settings import Settings
from tests.conftest import job, wait_for_status
from tests.worker_processes import (
    LEASE_TIMEOUT_S,
    Worker,
    event_names,
    forget_namespace,
    needs_redis,
    redis_settings,
    wait_until,
    worker_pool,
)

pytestmark = needs_redis
RUN_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def settings(make_database: Callable[[], str]) -> Iterator[Settings]:
    data_dir = Path(tempfile.mkdtemp(prefix="controlroom-dramatiq-"))
    s = redis_settings(make_database(), data_dir)
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
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    with worker_pool(settings, tmp_path) as start:
        yield start


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
