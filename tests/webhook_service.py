"""A Control Room service for webhook tests: its own database, 127.0.0.1 allowlisted, fast retries.

No worker runs here: runs are driven by the inbound hook, as an external runner would
(real job processes are exercised by tests/e2e/test_webhook_crash.py).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services, bootstrap, build_app
from controlroom.settings import Settings, WebhookSettings
from tests.conftest import job

FAST_RETRIES = "0,0.3,0.3,0.3,0.3,0.3"
"""Six attempts 0.3 s apart (±10 %), instead of Standard Webhooks' 24 hours."""


@contextlib.contextmanager
def webhook_service(dsn: str, data_dir: Path, **webhooks: Any) -> Iterator[tuple[Services, TestClient[Any]]]:
    """The service (no worker) and a test client for it."""
    options = {"callback_allowlist": "127.0.0.1", "retry_schedule": FAST_RETRIES, "timeout_s": 2.0,
               **webhooks}
    settings = Settings(database_url=dsn, data_dir=data_dir, jwt_secret="wh-" + uuid.uuid4().hex,
                        webhooks=WebhookSettings(**options))
    with bootstrap(settings, run_worker=False) as services, TestClient(build_app(services)) as client:
        yield services, client


class Tenant:
    """A fresh tenant of a service, with helpers to submit runs and report on them."""

    def __init__(self, services: Services, client: TestClient[Any]) -> None:
        self.id = f"tenant-{uuid.uuid4().hex[:8]}"
        self.services = services
        self.client = client
        token = issue_token(services.jwt_secret, tenant=self.id, sub="alice", scopes=ALL_SCOPES,
                            ttl_s=600)
        self.auth = {"Authorization": f"Bearer {token}"}

    def rotate(self) -> str:
        """A new webhook secret."""
        resp = self.client.post("/api/v1/webhooks/secret", headers=self.auth)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["secret"])

    def submit(self, **callbacks: str) -> str:
        """A queued run with these callbacks."""
        resp = self.client.post("/api/v1/jobs/run", headers=self.auth,
                                json=job("print(1)", callbacks=callbacks))
        assert resp.status_code == 202, resp.text
        return str(resp.json()["run_id"])

    def report(self, run_id: str, status: str, **extra: Any) -> Any:
        """POST /webhooks/continue with the bearer token."""
        return self.client.post("/api/v1/webhooks/continue", headers=self.auth,
                                json={"run_id": run_id, "status": status, **extra})

    def deliveries(self, run_id: str) -> list[dict[str, Any]]:
        resp = self.client.get(f"/api/v1/runs/{run_id}/deliveries", headers=self.auth)
        assert resp.status_code == 200, resp.text
        return list(resp.json()["deliveries"])

    def wait_until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        """Poll until `done()`."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "condition never held"
            time.sleep(0.05)

    def wait_deliveries(self, run_id: str, done: Callable[[list[dict[str, Any]]], bool],
                        timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll the run's delivery log until `done(deliveries)`."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.deliveries(run_id)
            if done(found):
                return found
            assert time.monotonic() < deadline, f"deliveries never got there: {found}"
            time.sleep(0.05)
