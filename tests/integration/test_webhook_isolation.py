"""One hanging webhook receiver delays nobody else's deliveries; each attempt is timed whole.

Real HTTP receivers on 127.0.0.1: one holds every request for 30 s, others answer at once. The
fast receivers' webhooks arrive promptly while the hanging one has more deliveries queued than
the worker has threads; every attempt records when it started and when it finished.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from controlroom.adapters.webhooks.delivery import HttpWebhookSender
from controlroom.adapters.webhooks.ssrf import CallbackGuard
from controlroom.cli import Services
from tests.webhook_receiver import Receiver
from tests.webhook_service import Tenant, webhook_service

HANG_S = 30.0
TIMEOUT_S = 15.0
HUNG_RUNS = 24
"""More than the worker's 16 threads: before isolation they all waited on the hanging receiver."""
FAST_RUNS = 6
PROMPT_S = 8.0
"""A liveness bound, well under the receiver's hang and the 15 s timeout it held threads for."""


@pytest.fixture(scope="module")
def service(make_server_database: Callable[[], str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, TestClient[Any]]]:
    with webhook_service(make_server_database(), tmp_path_factory.mktemp("isolation"),
                         timeout_s=TIMEOUT_S) as running:
        yield running


def _received(receiver: Receiver) -> int:
    with receiver.lock:
        return len(receiver.received)


def test_a_hanging_receiver_does_not_delay_other_tenants_deliveries(
    service: tuple[Services, TestClient[Any]],
) -> None:
    slow, fast = Tenant(*service), Tenant(*service)
    hanging, quick = Receiver(), [Receiver(), Receiver()]
    release = threading.Event()
    hanging.answer = lambda r: (release.wait(HANG_S), 200)[1]  # holds the request 30 s
    try:
        for _ in range(HUNG_RUNS):
            run_id = slow.submit(on_complete=hanging.url())
            assert slow.report(run_id, "completed").status_code == 200
        hanging.wait_for(lambda rs: len(rs) >= 1)
        started = time.monotonic()
        fast_runs = []
        for i in range(FAST_RUNS):
            fast_runs.append(run_id := fast.submit(on_complete=quick[i % 2].url()))
            assert fast.report(run_id, "completed").status_code == 200
        for r in quick:
            r.wait_for(lambda rs: len(rs) >= FAST_RUNS // 2, timeout=PROMPT_S)
        took = time.monotonic() - started
        assert took < PROMPT_S, f"fast receivers waited {took:.1f}s behind the hanging one"
        assert _received(hanging) < HUNG_RUNS, "the hanging receiver had every delivery at once"
        for run_id in fast_runs:
            [delivery] = fast.wait_deliveries(run_id, lambda ds: ds and ds[0]["status"] == "delivered")
            [attempt] = delivery["attempts"]
            assert attempt["started_at"] < attempt["finished_at"], attempt
            assert attempt["attempted_at"] == attempt["started_at"]
    finally:
        release.set()
        for r in (hanging, *quick):
            r.stop()


def _trickling_server(stop: threading.Event) -> int:
    """A receiver that answers one byte of its headers every 0.2 s, for ever."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\n" + b"x-slow: " + b"a" * 10_000:
                if stop.wait(0.2):
                    return
                conn.sendall(bytes([byte]))

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


def test_the_timeout_bounds_a_whole_attempt_not_each_read() -> None:
    stop = threading.Event()
    port = _trickling_server(stop)
    sender = HttpWebhookSender(CallbackGuard("127.0.0.1"), timeout_s=1.0)
    try:
        began = time.monotonic()
        result = sender.send(f"http://127.0.0.1:{port}/hook", "msg_1", b"{}", [])
        took = time.monotonic() - began
    finally:
        stop.set()
        sender.close()
    assert result.status_code is None and "timed out" in (result.error or ""), result
    assert took < 5.0, f"a receiver sending a byte at a time held the attempt {took:.1f}s"
    assert result.started_at is not None and result.finished_at is not None
    assert result.started_at < result.finished_at
