"""Real `controlroom worker` processes on Redis, for the dramatiq and reaper tests.

Each test session uses its own Redis key namespace, so parallel sessions on one Redis never
take each other's messages; its keys are deleted when the session ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from controlroom.cli import Services
from controlroom.settings import Settings

REDIS_URL = os.environ.get("REDIS_URL")
LEASE_TIMEOUT_S = 3.0
STOP_TIMEOUT_S = 30.0

needs_redis = pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL is not set (CI sets it)")


def redis_settings(database_url: str, data_dir: Path) -> Settings:
    """Settings on Redis with a namespace of their own and a short lease timeout."""
    return Settings(
        database_url=database_url, redis_url=REDIS_URL, data_dir=data_dir,
        redis_namespace=f"controlroom-test-{uuid.uuid4().hex[:12]}",
        jwt_secret=uuid.uuid4().hex * 2, secret_key=uuid.uuid4().hex,
        lease_timeout_s=LEASE_TIMEOUT_S,
    )


def forget_namespace(settings: Settings) -> None:
    """Delete every Redis key of the settings' namespace."""
    import redis

    client = redis.Redis.from_url(settings.redis_url or "")
    with contextlib.closing(client):
        for key in client.scan_iter(match=f"{settings.redis_namespace}:*", count=1000):
            client.delete(key)


class Worker:
    """One `controlroom worker` command (a supervisor when processes > 1)."""

    def __init__(self, settings: Settings, logs: Path, *, processes: int, threads: int) -> None:
        self.log_path = logs / f"worker-{uuid.uuid4().hex[:6]}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLROOM_")}
        env.update({
            "DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or "",
            "CONTROLROOM_REDIS_NAMESPACE": settings.redis_namespace,
            "CONTROLROOM_DATA_DIR": str(settings.data_dir),
            "CONTROLROOM_JWT_SECRET": settings.jwt_secret or "",
            "CONTROLROOM_SECRET_KEY": settings.secret_key or "",
            "CONTROLROOM_LEASE_TIMEOUT_S": str(settings.lease_timeout_s),
            "PYTHONUNBUFFERED": "1",
        })
        cmd = [sys.executable, "-m", "controlroom.cli", "worker",
               "--processes", str(processes), "--threads", str(threads)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        """What the worker printed, for assertion messages."""
        text = self.log_path.read_text(errors="replace")[-8000:]
        return f"\n--- worker {self.proc.pid} (exit {self.proc.poll()}) ---\n{text}\n---"

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM; the exit code, or None if it did not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """Make sure the worker and everything in its session are gone."""
        if self.proc.poll() is None and self.terminate() is None:
            self.proc.kill()
            self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def worker_pool(settings: Settings, logs: Path) -> Iterator[Callable[..., Worker]]:
    """start(processes=1, threads=2) -> a running Worker; all are stopped at the end."""
    workers: list[Worker] = []

    def start(*, processes: int = 1, threads: int = 2) -> Worker:
        workers.append(Worker(settings, logs, processes=processes, threads=threads))
        return workers[-1]

    try:
        yield start
    finally:
        for w in workers:
            w.close()


def run_events(services: Services, run_id: str | UUID) -> list[Any]:
    """The run's events, straight from the log."""
    return list(services.commands.app.events.get(UUID(str(run_id))))


def event_names(services: Services, run_id: str | UUID) -> list[str]:
    """Class names of the run's events, in order."""
    return [type(e).__name__ for e in run_events(services, run_id)]


def kill_group(pid: int) -> None:
    """SIGKILL a job's process group (jobs run in sessions of their own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
