"""Resume correctness against the real `controlroom serve`: a client killed mid-stream (SIGKILL,
a separate process) reconnects with its last id and gets every later event exactly once, in
order — events posted while it was away included; and a stopping server ends its streams.

The server runs without a worker, so runs stay queued and only the test's events are recorded.
"""

from __future__ import annotations

import random
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
from tests.live_events import ServeProcess, sse

pytestmark = pytest.mark.slow

API = "/api/v1"
SECRET = "resume-" + uuid.uuid4().hex
# A separate process that prints the id of every message it receives, as it receives it.
CLIENT = """
import signal, sys, httpx
from tests.live_events import sse
signal.alarm(60)  # never hang the test: a stuck client dies and the test reports what it saw
url, token, last = sys.argv[1], sys.argv[2], sys.argv[3] or None
with httpx.Client(base_url=url, timeout=60) as c:
    with sse(c, sys.argv[4], {"Authorization": "Bearer " + token}, last_event_id=last) as messages:
        for m in messages:
            if m.comment is None:
                print(m.id if m.event != "end" else "end", flush=True)
"""


@pytest.fixture(scope="module")
def server(make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServeProcess]:
    s = ServeProcess(make_server_database(), tmp_path_factory.mktemp("resume"), jwt_secret=SECRET,
                     extra_args=["--no-worker"], env={"CONTROLROOM_SSE_HEARTBEAT_S": "0.5"})
    try:
        yield s.wait_ready()
    finally:
        s.stop()


@pytest.fixture
def token(tenant: str) -> str:
    return issue_token(SECRET, tenant=tenant, sub="ci", scopes=ALL_SCOPES, ttl_s=600)


class Api:
    """Submits, posts events and cancels over HTTP."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"})

    def submit(self) -> str:
        resp = self.http.post(f"{API}/jobs/run", json=job("print('x')"))
        assert resp.status_code == 202, resp.text
        return str(resp.json()["run_id"])

    def progress(self, run_id: str, n: int) -> None:
        events = [{"event_type": "progress", "percent": i % 100, "message": f"e{i}"} for i in range(n)]
        assert self.http.post(f"{API}/runs/{run_id}/events", json=events).status_code == 202

    def cancel(self, run_id: str) -> None:
        assert self.http.post(f"{API}/runs/{run_id}/cancel").status_code == 202


class Client:
    """The killable client process."""

    def __init__(self, server: ServeProcess, token: str, run_id: str, last: str | None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT, server.base_url, token, last or "",
             f"{API}/runs/{run_id}/events"],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
        self.seen: list[str] = []

    def read_until(self, count: int) -> None:
        while len(self.seen) < count:
            line = self.proc.stdout.readline() if self.proc.stdout else ""
            assert line, f"client ended early after {self.seen}"
            self.seen.append(line.strip())

    def kill(self) -> list[str]:
        """SIGKILL; what it had received by then (including lines not read yet)."""
        self.proc.kill()
        self.proc.wait(timeout=10)
        return self._rest()

    def finish(self) -> list[str]:
        assert self.proc.wait(timeout=30) == 0
        return self._rest()

    def _rest(self) -> list[str]:
        # read() through the same buffered reader: communicate() would skip the lines that
        # readline() already buffered.
        assert self.proc.stdout is not None
        with self.proc.stdout:
            return self.seen + self.proc.stdout.read().split()


def test_a_client_killed_mid_stream_resumes_with_its_last_id_and_misses_and_repeats_nothing(
    server: ServeProcess, token: str
) -> None:
    api = Api(server.base_url, token)
    run_id = api.submit()
    api.progress(run_id, 20)                     # versions 2..21
    a = Client(server, token, run_id, None)
    a.read_until(5)                              # killed during the replay
    got = a.kill()
    api.progress(run_id, 10)                     # 22..31, posted while nobody listens
    b = Client(server, token, run_id, got[-1])
    b.read_until(31 - len(got))                  # replay to the head, then live
    api.progress(run_id, 5)                      # 32..36, live
    b.read_until(31 - len(got) + 2)
    got += b.kill()                              # killed during the live phase
    api.progress(run_id, 5)                      # 37..41 while away
    api.cancel(run_id)                           # 42 cancel requested, 43 cancelled
    c = Client(server, token, run_id, got[-1])
    got += c.finish()
    assert got == [*map(str, range(1, 44)), "end"]


def test_random_disconnects_while_events_are_posted_lose_and_repeat_nothing(
    server: ServeProcess, token: str
) -> None:
    api = Api(server.base_url, token)
    run_id = api.submit()
    rnd = random.Random(7)
    total = 150

    def poster() -> None:
        posted = 0
        while posted < total:
            n = rnd.randint(1, 9)
            api.progress(run_id, min(n, total - posted))
            posted += min(n, total - posted)
            time.sleep(rnd.random() * 0.02)
        api.cancel(run_id)

    thread = threading.Thread(target=poster)
    thread.start()
    got: list[str] = []
    reconnects = 0
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        while not got or got[-1] != "end":
            take = rnd.randint(1, 15)
            with sse(http, f"{API}/runs/{run_id}/events", {"Authorization": f"Bearer {token}"},
                     last_event_id=got[-1] if got else None) as messages:
                for m in messages:
                    if m.comment is None:
                        got.append(m.id if m.event != "end" else "end")
                        take -= 1
                        if take == 0 or m.event == "end":
                            break
            reconnects += 1
    thread.join()
    assert got == [*map(str, range(1, total + 4)), "end"]
    assert reconnects > 10


def test_a_stopping_server_ends_its_open_streams_and_exits(server: ServeProcess, token: str) -> None:
    """Last in this module: it stops the module's server (another would cost ~40 connections)."""
    run_id = Api(server.base_url, token).submit()
    received: list[Any] = []
    streaming = threading.Event()

    def listen() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as http, sse(
                http, f"{API}/runs/{run_id}/events", {"Authorization": f"Bearer {token}"}
        ) as messages:
            for m in messages:
                received.append(m.id)
                streaming.set()

    thread = threading.Thread(target=listen)
    thread.start()
    assert streaming.wait(10), server.output()
    started = time.monotonic()
    assert server.stop() == 0, server.output()
    thread.join(timeout=10)
    assert not thread.is_alive() and received[0] == "1"  # ended without `end`: it may resume
    assert time.monotonic() - started < 10, server.output()
