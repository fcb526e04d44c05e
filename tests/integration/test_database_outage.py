"""When the database goes away the API degrades instead of collapsing (DESIGN.md §8).

The API reaches PostgreSQL through a real pgbouncer that the test kills and restarts, which
cuts every connection the API holds, as a database restart or network partition would.
"""

from __future__ import annotations

import time
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
HANG_LIMIT_S = 15.0
"""Not a performance target: only proof that requests don't hang while the database is away."""


@pytest.fixture
def link(make_server_database: Callable[[], str]) -> Iterator[tuple[str, Pgbouncer]]:
    """A fresh database and a cuttable link to it."""
    direct = make_server_database()
    bouncer = Pgbouncer(direct)
    bouncer.start()
    try:
        yield direct, bouncer
    finally:
        bouncer.close()


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_the_api_answers_503_with_retry_after_while_the_database_is_away_and_recovers(
    link: tuple[str, Pgbouncer], tmp_path: Path
) -> None:
    direct, bouncer = link
    keys = {"jwt_secret": uuid.uuid4().hex * 2, "secret_key": uuid.uuid4().hex}
    backend = Settings(database_url=direct, data_dir=tmp_path / "backend", **keys)
    api = Settings(database_url=bouncer.dsn, data_dir=tmp_path / "api", transaction_pooler=True,
                   **keys)
    headers = {"Authorization": "Bearer " + issue_token(
        keys["jwt_secret"], tenant="outage", sub="alice", scopes=ALL_SCOPES, ttl_s=600)}

    with bootstrap(backend), bootstrap(api, run_worker=False, run_projections=False) as front:
        client: TestClient[Any]
        with TestClient(build_app(front)) as client:
            before = client.post("/api/v1/jobs/run", json=job("print('before')"), headers=headers)
            run_id = before.json()["run_id"]
            assert wait_for_status(client, run_id, headers)["status"] == "completed"

            bouncer.stop()
            for call in (
                lambda: client.get(f"/api/v1/runs/{run_id}", headers=headers),
                lambda: client.get("/api/v1/runs", headers=headers),
                lambda: client.post("/api/v1/jobs/run", json=job("print('x')"), headers=headers),
            ):
                resp, took = _timed(call)
                assert resp.status_code == 503, resp.text
                assert resp.headers["content-type"].startswith("application/problem+json")
                assert int(resp.headers["retry-after"]) > 0
                assert "database" in resp.json()["detail"]
                assert took < HANG_LIMIT_S
            ready, took = _timed(lambda: client.get("/readyz"))
            assert ready.status_code == 503 and took < HANG_LIMIT_S
            assert client.get("/healthz").status_code == 200  # alive, just not ready

            bouncer.start()
            deadline = time.monotonic() + 30
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "never became ready again"
                time.sleep(0.2)
            again = client.get(f"/api/v1/runs/{run_id}", headers=headers)
            assert again.status_code == 200 and again.json()["status"] == "completed"
            after = client.post("/api/v1/jobs/run", json=job("print('after')"), headers=headers)
            assert after.status_code == 202, after.text
            assert wait_for_status(client, after.json()["run_id"], headers)["status"] == "completed"
