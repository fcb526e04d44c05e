"""One tenant's big appends can't wedge everyone's writes (DESIGN.md §7, docs/limits.md).

Against the real HTTP server and PostgreSQL: the payload that used to leave an insert holding
the event log's exclusive lock forever (psycopg pipeline deadlock), every append limit exactly
at and one over, and other tenants' writes going on while one tenant sends big appends.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.api.runs.event_limits import event_bytes
from controlroom.cli import Services, bootstrap, build_app
from controlroom.commands.append_limits import (
    LOG_CHUNK_BYTES,
    MAX_EVENT_BYTES,
    MAX_EVENTS_BODY_BYTES,
    MAX_EVENTS_PER_REQUEST,
)
from controlroom.commands.messages import Log
from controlroom.settings import Settings
from tests.conftest import job, read_back
from tests.live_events import serve_in_thread

API = "/api/v1"
LIVENESS_S = 20.0
"""Not a performance target: only proof that a write is not stuck behind another tenant's."""


@pytest.fixture(scope="module")
def served(make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Services, str]]:
    """(services, base url) of a service of its own, without a worker: runs stay queued."""
    settings = Settings(database_url=make_server_database(), data_dir=tmp_path_factory.mktemp("limits"),
                        jwt_secret="limits-" + uuid.uuid4().hex)
    with bootstrap(settings, run_worker=False) as services, \
            serve_in_thread(build_app(services)) as url:
        yield services, url


@pytest.fixture
def http(served: tuple[Services, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[1], timeout=60.0) as c:
        yield c


def headers(served: tuple[Services, str], tenant: str) -> dict[str, str]:
    token = issue_token(served[0].jwt_secret, tenant=tenant, sub="alice", scopes=ALL_SCOPES,
                        ttl_s=600)
    return {"Authorization": f"Bearer {token}"}


def new_run(http: httpx.Client, h: dict[str, str]) -> str:
    resp = http.post(f"{API}/jobs/run", json=job("print('hi')"), headers=h)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


def log(text: str) -> dict[str, Any]:
    return {"event_type": "log", "text": text, "stream": "stdout"}


def log_lines(http: httpx.Client, h: dict[str, str], run_id: str) -> int:
    return int(http.get(f"{API}/runs/{run_id}", headers=h).json()["log_lines"])


def stored_events(services: Services) -> int:
    with psycopg.connect(services.dsn) as conn:
        row = conn.execute("SELECT count(*) FROM controlroom_events").fetchone()
        assert row is not None
        return int(row[0])


def lock_holders(services: Services) -> list[tuple[Any, ...]]:
    """Sessions holding the event log's lock while waiting on their client: the wedge."""
    with psycopg.connect(services.dsn) as conn:
        return conn.execute(
            "SELECT a.pid, a.state, a.wait_event FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.relation = 'controlroom_events'::regclass AND l.mode = 'ExclusiveLock' "
            "AND l.granted AND a.wait_event = 'ClientRead'").fetchall()


def test_the_payload_that_wedged_every_write_is_now_recorded_and_releases_the_log(
    served: tuple[Services, str], http: httpx.Client
) -> None:
    """1,000 log events of 9,000 characters in one append used to leave the insert holding the
    log's exclusive lock, waiting on its own client (state `active`, wait_event `ClientRead`):
    every later write of every tenant answered 503 after 8 s. Sent in requests under the body
    limit it is recorded, and the next write of another tenant goes through at once."""
    services, _ = served
    h, other = headers(served, "wedge-a"), headers(served, "wedge-b")
    run_id = new_run(http, h)
    for _ in range(4):
        resp = http.post(f"{API}/runs/{run_id}/events", headers=h,
                         json=[log("x" * 9000) for _ in range(MAX_EVENTS_PER_REQUEST // 4)])
        assert resp.status_code == 202, resp.text
    read_back(http, h, run_id, resp)
    assert log_lines(http, h, run_id) == MAX_EVENTS_PER_REQUEST
    assert lock_holders(services) == []
    started = time.monotonic()
    assert http.post(f"{API}/jobs/run", json=job("print(1)"), headers=other).status_code == 202
    assert time.monotonic() - started < LIVENESS_S


def test_the_event_store_appends_nine_mebibytes_in_one_statement_without_a_stuck_lock(
    make_server_database: Callable[[], str]
) -> None:
    """The recorder itself, on a database of its own: the exact append that deadlocked in
    eventsourcing's pipelined insert (1,000 events of 9,200 bytes) returns, in order."""
    from eventsourcing.persistence import StoredEvent

    from controlroom.adapters.postgres.database import eventsourcing_env
    from controlroom.adapters.postgres.event_store import EventStoreFactory

    dsn = make_server_database()
    factory = EventStoreFactory(eventsourcing_env(dsn))
    recorder = factory.application_recorder()
    recorder.create_table()
    oid = uuid.uuid4()
    events = [StoredEvent(oid, v, "test", b"x" * 9200) for v in range(1, 1001)]
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(recorder.insert_events(events)),
                              daemon=True)
    thread.start()
    thread.join(LIVENESS_S)
    try:
        assert done, "the append never returned"
        assert len(done[0]) == 1000 and done[0] == sorted(done[0])
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM pg_locks l JOIN pg_class c "
                                "ON c.oid = l.relation WHERE c.relname = 'stored_events'"
                                ).fetchone() == (0,)
    finally:
        factory.close()


def test_event_count_limit_exactly_at_and_one_over(
    served: tuple[Services, str], http: httpx.Client
) -> None:
    h = headers(served, "count")
    run_id = new_run(http, h)
    ok = http.post(f"{API}/runs/{run_id}/events", headers=h,
                   json=[log("l") for _ in range(MAX_EVENTS_PER_REQUEST)])
    assert ok.status_code == 202, ok.text
    assert ok.json()["accepted"] == MAX_EVENTS_PER_REQUEST
    read_back(http, h, run_id, ok)
    before = stored_events(served[0])
    over = http.post(f"{API}/runs/{run_id}/events", headers=h,
                     json=[log("l") for _ in range(MAX_EVENTS_PER_REQUEST + 1)])
    assert over.status_code == 422, over.text
    assert over.headers["content-type"].startswith("application/problem+json")
    assert over.json()["errors"][0]["field"] == "body"
    assert str(MAX_EVENTS_PER_REQUEST) in over.json()["detail"]
    assert stored_events(served[0]) == before
    assert log_lines(http, h, run_id) == MAX_EVENTS_PER_REQUEST


def _text_for_event_of(size: int) -> str:
    """A log text whose event is exactly `size` bytes as compact JSON."""
    overhead = event_bytes(Log(text="", stream="stdout"))
    return "y" * (size - overhead)


def test_event_byte_limit_exactly_at_and_one_over(
    served: tuple[Services, str], http: httpx.Client
) -> None:
    h = headers(served, "event-bytes")
    run_id = new_run(http, h)
    at = _text_for_event_of(MAX_EVENT_BYTES)
    ok = http.post(f"{API}/runs/{run_id}/events", headers=h, json=[log(at)])
    assert ok.status_code == 202, ok.text
    read_back(http, h, run_id, ok)
    # One event over the chunk size is kept as several log events, cut at the chunk size.
    text = http.get(f"{API}/runs/{run_id}/logs", headers=h).text
    assert text.replace("\n", "") == at
    assert log_lines(http, h, run_id) == -(-len(at) // LOG_CHUNK_BYTES)

    before = stored_events(served[0])
    over = http.post(f"{API}/runs/{run_id}/events", headers=h,
                     json=[log("fine"), log(_text_for_event_of(MAX_EVENT_BYTES + 1))])
    assert over.status_code == 413, over.text
    assert over.headers["content-type"].startswith("application/problem+json")
    assert over.json()["errors"][0]["field"] == "[1]"
    assert stored_events(served[0]) == before  # nothing of the request, not even event 0


def _body_of(size: int) -> bytes:
    """A JSON list of log events padded with whitespace to exactly `size` bytes."""
    events = b"[" + b",".join(
        b'{"event_type":"log","text":"' + b"z" * 60_000 + b'"}' for _ in range(size // 60_100)
    ) + b"]"
    assert len(events) <= size
    return events + b" " * (size - len(events))


def test_request_byte_limit_exactly_at_and_one_over(
    served: tuple[Services, str], http: httpx.Client
) -> None:
    h = {**headers(served, "body-bytes"), "Content-Type": "application/json"}
    run_id = new_run(http, h)
    ok = http.post(f"{API}/runs/{run_id}/events", headers=h, content=_body_of(MAX_EVENTS_BODY_BYTES))
    assert ok.status_code == 202, ok.text
    read_back(http, h, run_id, ok)
    lines = log_lines(http, h, run_id)
    assert lines == MAX_EVENTS_BODY_BYTES // 60_100

    before = stored_events(served[0])
    over = http.post(f"{API}/runs/{run_id}/events", headers=h,
                     content=_body_of(MAX_EVENTS_BODY_BYTES + 1))
    assert over.status_code == 413, over.text
    assert over.headers["content-type"].startswith("application/problem+json")
    assert stored_events(served[0]) == before
    assert log_lines(http, h, run_id) == lines


def test_other_tenants_keep_writing_while_one_sends_big_and_oversized_appends(
    served: tuple[Services, str]
) -> None:
    """While one tenant sends body-limit appends and refused ones in a loop, another tenant's
    submissions and events keep being accepted (a generous liveness bound, not a target)."""
    base = served[1]
    noisy, quiet = headers(served, "noisy"), headers(served, "quiet")
    stop = threading.Event()
    noisy_results: list[int] = []

    def flood() -> None:
        with httpx.Client(base_url=base, timeout=60.0) as c:
            run_id = new_run(c, noisy)
            big = _body_of(MAX_EVENTS_BODY_BYTES)
            too_big = [log("n" * 9000) for _ in range(MAX_EVENTS_PER_REQUEST)]  # ~8.8 MiB
            while not stop.is_set():
                noisy_results.append(c.post(f"{API}/runs/{run_id}/events", content=big,
                                            headers={**noisy, "Content-Type": "application/json"}
                                            ).status_code)
                noisy_results.append(c.post(f"{API}/runs/{run_id}/events", json=too_big,
                                            headers=noisy).status_code)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        with httpx.Client(base_url=base, timeout=60.0) as c:
            run_id = new_run(c, quiet)
            deadline = time.monotonic() + 60
            while len(noisy_results) < 6 and time.monotonic() < deadline:
                started = time.monotonic()
                sub = c.post(f"{API}/jobs/run", json=job("print(2)"), headers=quiet)
                ev = c.post(f"{API}/runs/{run_id}/events", json=[log("quiet")], headers=quiet)
                took = time.monotonic() - started
                assert (sub.status_code, ev.status_code) == (202, 202), (sub.text, ev.text)
                assert took < LIVENESS_S, f"a quiet write took {took:.1f}s"
    finally:
        stop.set()
        flooder.join(120)
    assert set(noisy_results) <= {202, 413}, noisy_results
    assert 202 in noisy_results and 413 in noisy_results


def test_readyz_is_red_while_writes_fail_and_green_once_they_go_through(
    served: tuple[Services, str], http: httpx.Client
) -> None:
    """A session holding the log's lock makes appends time out (lock_timeout): the write
    answers 503 fast, /readyz says why; once the lock is released /readyz is green again."""
    services, _ = served
    h = headers(served, "ready")
    assert http.get("/readyz").status_code == 200
    with psycopg.connect(services.dsn) as holder:
        holder.execute("LOCK TABLE controlroom_events IN EXCLUSIVE MODE")
        failed = http.post(f"{API}/jobs/run", json=job("print(3)"), headers=h)
        assert failed.status_code == 503, failed.text
        assert int(failed.headers["retry-after"]) > 0
        red = http.get("/readyz")
        assert red.status_code == 503, red.text
        assert red.json()["checks"]["writes"].startswith("failing")
        assert red.json()["checks"]["database"] == "ok"  # reads still answer
        holder.rollback()
    green = http.get("/readyz")
    assert green.status_code == 200, green.text
    assert green.json()["checks"]["writes"] == "ok"
    assert http.post(f"{API}/jobs/run", json=job("print(4)"), headers=h).status_code == 202
