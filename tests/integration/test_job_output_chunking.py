"""A job printing tens of MiB is logged in bounded appends while everyone else keeps writing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from controlroom.cli import Services, build_app
from tests.conftest import job
from tests.live_events import serve_in_thread

API = "/api/v1"
LINES = 3000
LINE_CHARS = 16_000
LIVENESS_S = 20.0
"""Not a performance target: only proof that other writes aren't stuck behind the job's log."""


@pytest.fixture
def http(services: Services) -> Iterator[httpx.Client]:
    with serve_in_thread(build_app(services)) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


def test_a_job_printing_3000_lines_of_16_kb_completes_with_its_log_while_others_write(
    http: httpx.Client, token: Callable[..., str]
) -> None:
    loud = {"Authorization": f"Bearer {token('loud-tenant')}"}
    quiet = {"Authorization": f"Bearer {token('quiet-tenant')}"}
    source = (f"line = 'q' * {LINE_CHARS}\n"
              f"for i in range({LINES}):\n    print(f'{{i:05d}}' + line)\n")
    resp = http.post(f"{API}/jobs/run", json=job(source, timeout_s=600), headers=loud)
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    quiet_run = http.post(f"{API}/jobs/run", json=job("import time; time.sleep(1)"),
                          headers=quiet).json()["run_id"]

    deadline = time.monotonic() + 300
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        started = time.monotonic()
        sub = http.post(f"{API}/jobs/run", json=job("print('quiet')"), headers=quiet)
        took = time.monotonic() - started
        assert sub.status_code == 202, sub.text
        assert took < LIVENESS_S, f"another tenant's submit took {took:.1f}s"
        run = http.get(f"{API}/runs/{run_id}", headers=loud).json()
        if run["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.5)
    assert run["status"] == "completed", run
    assert http.get(f"{API}/runs/{quiet_run}", headers=quiet).status_code == 200
    deadline = time.monotonic() + 60
    while run["log_lines"] < LINES and time.monotonic() < deadline:
        time.sleep(0.5)
        run = http.get(f"{API}/runs/{run_id}", headers=loud).json()
    assert run["log_lines"] == LINES
    lines = http.get(f"{API}/runs/{run_id}/logs", headers=loud).text.splitlines()
    assert len(lines) == LINES
    assert [int(x[:5]) for x in lines] == list(range(LINES))
    assert all(len(x) == 5 + LINE_CHARS for x in lines)
