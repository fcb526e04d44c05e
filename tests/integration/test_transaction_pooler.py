"""The API works through a transaction-mode pooler (as with Supabase's, port 6543).

A real pgbouncer in `pool_mode = transaction` with a tiny server pool sits between the API
and PostgreSQL, so consecutive transactions land on different server connections: any
prepared statement or session state the API relied on would break. The projections and the
worker use a direct connection, as docs/operations.md tells operators to do (they need LISTEN).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import bootstrap, build_app
from controlroom.settings import Settings
from tests.conftest import job, wait_for_status
from tests.pgbouncer import PGBOUNCER, Pgbouncer

pytestmark = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (CI installs it: apt-get install pgbouncer)"
)


@pytest.fixture
def pooled_dsn(make_server_database: Callable[[], str]) -> Iterator[tuple[str, str]]:
    """(direct DSN, DSN through pgbouncer in transaction mode) for a fresh database."""
    direct = make_server_database()
    bouncer = Pgbouncer(direct)
    bouncer.start()
    try:
        yield direct, bouncer.dsn
    finally:
        bouncer.close()


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
