"""The real `controlroom serve` killed (SIGKILL) while a callback is in flight, then restarted:
the callback is still delivered — with the same webhook-id, so the receiver can dedupe it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlroom.api.auth import ALL_SCOPES, issue_token
from tests.conftest import job
from tests.live_events import free_port
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.slow

JWT_SECRET = "crash-test-" + uuid.uuid4().hex
READY_TIMEOUT_S = 60.0


class Serve:
    """`controlroom serve` on a database and data dir, output kept in files."""

    def __init__(self, dsn: str, data_dir: Path, name: str) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLROOM_")}
        env.update(DATABASE_URL=dsn, CONTROLROOM_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1",
                   CONTROLROOM_JWT_SECRET=JWT_SECRET, CONTROLROOM_CALLBACK_ALLOWLIST="127.0.0.1",
                   CONTROLROOM_WEBHOOK_TIMEOUT_S="2", CONTROLROOM_WEBHOOK_RETRY_SCHEDULE="0,0.5,0.5,1")
        env.pop("REDIS_URL", None)
        self.log = data_dir / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controlroom.cli", "serve", "--port", str(self.port)],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10.0)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if self.http.get("/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"server not ready: {self.log.read_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL the server and everything it started (its job processes)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.http.close()


@pytest.fixture
def servers(make_server_database: Callable[[], str], tmp_path: Path) -> Iterator[Callable[[str], Serve]]:
    dsn = make_server_database()
    started: list[Serve] = []

    def start(name: str) -> Serve:
        server = Serve(dsn, tmp_path, name)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def test_a_callback_in_flight_when_the_server_dies_is_delivered_after_restart(
    servers: Callable[[str], Serve],
) -> None:
    receiver = Receiver()
    in_flight, release = threading.Event(), threading.Event()

    def answer(got: Any) -> int:
        if not in_flight.is_set():  # the first attempt hangs until the server is dead
            in_flight.set()
            release.wait(30)
        return 200

    receiver.answer = answer
    first = servers("first")
    auth = {"Authorization": "Bearer " + issue_token(JWT_SECRET, tenant="crash", sub="ci",
                                                     scopes=ALL_SCOPES, ttl_s=600)}
    try:
        receiver.secrets = [first.http.post("/api/v1/webhooks/secret", headers=auth).json()["secret"]]
        resp = first.http.post("/api/v1/jobs/run", headers=auth, json=job(
            "print('built')", callbacks={"on_complete": receiver.url()}))
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["run_id"]
        assert in_flight.wait(30), first.log.read_text()[-4000:]
        first.kill()
        release.set()

        second = servers("second")
        got = receiver.wait_for(lambda rs: len(rs) >= 2, timeout=45)
    finally:
        release.set()
        receiver.stop()
    assert len({r.webhook_id for r in got}) == 1, "a redelivery keeps its webhook-id"
    assert all(r.verified_by == receiver.secrets for r in got)
    assert {r.json["data"]["run_id"] for r in got} == {run_id}
    assert got[0].json["type"] == "run.completed"
    deliveries = second.http.get(f"/api/v1/runs/{run_id}/deliveries", headers=auth).json()
    [delivery] = deliveries["deliveries"]
    deadline = time.monotonic() + 10
    while delivery["status"] != "delivered" and time.monotonic() < deadline:
        time.sleep(0.1)
        delivery = second.http.get(f"/api/v1/runs/{run_id}/deliveries", headers=auth).json()[
            "deliveries"][0]
    assert delivery["status"] == "delivered" and delivery["webhook_id"] == got[0].webhook_id
