"""One LISTEN connection per API process, shared by read-your-writes, live streams and lineage,
re-opened after the database cuts it. Real server (uvicorn in a thread), real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services, bootstrap, build_app
from controlroom.settings import Settings
from tests.conftest import job, wait_until
from tests.live_events import serve_in_thread, sse

API = "/api/v1"
LISTENERS = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
             "AND query ILIKE 'LISTEN %controlroom_projected%'")


@pytest.fixture(scope="module")
def served(make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Services, str]]:
    settings = Settings(database_url=make_server_database(), data_dir=tmp_path_factory.mktemp("listen"),
                        jwt_secret="listen-" + uuid.uuid4().hex)
    with bootstrap(settings, run_worker=False) as services, \
            serve_in_thread(build_app(services)) as url:
        yield services, url


@pytest.fixture
def http(served: tuple[Services, str], tenant: str) -> Iterator[httpx.Client]:
    token = issue_token(served[0].jwt_secret, tenant=tenant, sub="alice", scopes=ALL_SCOPES,
                        ttl_s=600)
    with httpx.Client(base_url=served[1], timeout=20,
                      headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def listeners(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(LISTENERS).fetchall()]


def submit(http: httpx.Client) -> str:
    resp = http.post(f"{API}/jobs/run", json=job("print('hi')"))
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


@contextlib.contextmanager
def watching(http: httpx.Client, run_id: str) -> Iterator[list[Any]]:
    """Stream the run's events in a thread; yields the list they arrive in."""
    received: list[Any] = []

    def watch() -> None:
        with sse(http, f"{API}/runs/{run_id}/events", {}, timeout=20) as messages:
            for m in messages:
                if m.comment is None:
                    received.append(m)
                    if m.event == "end":
                        return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        http.post(f"{API}/runs/{run_id}/cancel")
        thread.join(20)


def test_streams_waits_and_the_lineage_graph_share_one_listen_connection(
    served: tuple[Services, str], http: httpx.Client,
) -> None:
    runs = [submit(http) for _ in range(3)]
    with watching(http, runs[0]) as a, watching(http, runs[1]) as b, watching(http, runs[2]) as c:
        wait_until(lambda: a and b and c, what="three streams to open")
        assert len(listeners(served[0].dsn)) == 1


def test_a_listen_connection_the_database_cuts_is_opened_again_and_nothing_is_missed(
    served: tuple[Services, str], http: httpx.Client,
) -> None:
    dsn = served[0].dsn
    [pid] = wait_until(lambda: listeners(dsn), what="the listener")
    run_id = submit(http)
    with watching(http, run_id) as received:
        wait_until(lambda: received, what="the stream to replay the submission")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # While it is away, submissions are still read back (polling) and streams still flow
        # (reported events are answered without waiting for the read models).
        for i in range(5):
            assert http.post(f"{API}/runs/{run_id}/events", json=[
                {"event_type": "progress", "percent": 10 * i, "message": f"step {i}"}]).status_code == 202
            other = http.post(f"{API}/jobs/run", json=job("print('hi')"))
            assert other.status_code == 202 and "run-visible" not in other.headers
            assert http.get(f"{API}/runs/{other.json()['run_id']}").json()["visible"] is True
        reopened = wait_until(lambda: [p for p in listeners(dsn) if p != pid], what="a new listener")
        assert len(reopened) == 1
        wait_until(lambda: len(received) == 6, what="every event on the stream")
    assert [int(m.id) for m in received[:6]] == [1, 2, 3, 4, 5, 6]
