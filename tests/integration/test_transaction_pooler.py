"""The API works through a transaction-mode pooler (as with Supabase's, port 6543).

A real pgbouncer in `pool_mode = transaction` with a tiny server pool sits between the API
and PostgreSQL, so consecutive transactions land on different server connections: any
prepared statement or session state the API relied on would break. The projections and the
worker use a direct connection, as the README tells operators to do (they need LISTEN).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from litestar.testing import TestClient

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import bootstrap, build_app
from controlroom.settings import Settings
from tests.conftest import job, wait_for_status

PGBOUNCER = shutil.which("pgbouncer", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
pytestmark = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (CI installs it: apt-get install pgbouncer)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pooled_dsn(make_database: Callable[[], str]) -> Iterator[tuple[str, str]]:
    """(direct DSN, DSN through pgbouncer in transaction mode) for a fresh database."""
    direct = make_database()
    parts = urlsplit(direct)
    user = parts.username or "postgres"
    port = _free_port()
    conf_dir = Path(tempfile.mkdtemp(prefix="controlroom-pgbouncer-"))
    conf_dir.chmod(0o755)
    (conf_dir / "users.txt").write_text(f'"{user}" ""\n')
    (conf_dir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={parts.hostname} port={parts.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {conf_dir}/users.txt\n"
        "pool_mode = transaction\ndefault_pool_size = 3\nmax_client_conn = 200\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    for f in conf_dir.iterdir():
        f.chmod(0o644)
    cmd = [PGBOUNCER, str(conf_dir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        cmd[1:1] = ["-u", "nobody"]  # pgbouncer refuses to run as root
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pooled = parts._replace(netloc=f"{user}@127.0.0.1:{port}").geturl()
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(pooled, connect_timeout=1).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"pgbouncer did not start: {out}")
            time.sleep(0.1)
    try:
        yield direct, pooled
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(conf_dir, ignore_errors=True)


def test_submitting_and_reading_runs_through_a_transaction_pooler(
    pooled_dsn: tuple[str, str], tmp_path: Path
) -> None:
    direct, pooled = pooled_dsn
    keys = {"jwt_secret": uuid.uuid4().hex * 2, "secret_key": uuid.uuid4().hex}
    backend = Settings(database_url=direct, data_dir=tmp_path / "backend", **keys)
    api = Settings(database_url=pooled, data_dir=tmp_path / "api", transaction_pooler=True, **keys)
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": "Bearer " + issue_token(
        keys["jwt_secret"], tenant=tenant, sub="alice", scopes=ALL_SCOPES, ttl_s=600)}

    with bootstrap(backend), bootstrap(api, run_worker=False, run_projections=False) as front:
        client: TestClient[Any]
        with TestClient(build_app(front)) as client:
            run_ids = []
            for n in range(15):  # enough transactions to hop between the pooler's 3 server links
                body = job(f"import os\nprint('run {n}', os.environ['TOKEN'])",
                           spec={"secrets": {"TOKEN": "pooled-secret"}})
                resp = client.post("/api/v1/jobs/run", json=body, headers=headers,
                                   )
                assert resp.status_code == 202, resp.text
                run_ids.append(resp.json()["run_id"])
                assert client.get(f"/api/v1/runs/{run_ids[-1]}", headers=headers).status_code == 200
            for n, run_id in enumerate(run_ids):
                run = wait_for_status(client, run_id, headers)
                assert run["status"] == "completed", run
                log = client.get(f"/api/v1/runs/{run_id}/logs", headers=headers).text
                assert log.strip() == f"run {n} ***"
            listed = client.get("/api/v1/runs?limit=200", headers=headers).json()["runs"]
            assert {r["run_id"] for r in listed} == set(run_ids)
            progress = client.post(f"/api/v1/runs/{run_ids[0]}/events", headers=headers,
                                   json={"event_type": "progress", "percent": 10})
            assert progress.status_code == 409  # finished runs take no more events
