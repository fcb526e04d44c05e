"""Live run events over real HTTP: JSON pages, SSE replay → live → end, heartbeats, resume,
the tenant feed's filters, tenant isolation and slow subscribers.

The app is served by uvicorn in a thread (SSE through the test client would not show real
streaming or back-pressure) over its own database with no worker, so runs stay queued and
every event is one the test posted: the streams' contents are exactly predictable.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services, bootstrap, build_app
from controlroom.settings import Settings
from tests.conftest import job
from tests.live_events import Message, parse, serve_in_thread, sse

API = "/api/v1"
HEARTBEAT_S = 0.3
BUFFER = 40
WAIT_S = 15.0


@pytest.fixture(scope="module")
def served(make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Services, Any, str]]:
    """(services, app, base url): no worker, a short heartbeat and a small subscriber buffer."""
    settings = Settings(database_url=make_server_database(), data_dir=tmp_path_factory.mktemp("sse"),
                        jwt_secret="sse-" + uuid.uuid4().hex, sse_heartbeat_s=HEARTBEAT_S,
                        sse_buffer=BUFFER)
    with bootstrap(settings, run_worker=False) as services:
        app = build_app(services)
        with serve_in_thread(app) as url:
            yield services, app, url


@pytest.fixture
def http(served: tuple[Services, Any, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[2], timeout=WAIT_S) as c:
        yield c


def headers_for(served: tuple[Services, Any, str], tenant: str, **claims: Any) -> dict[str, str]:
    token = issue_token(served[0].jwt_secret, tenant=tenant, sub="alice",
                        scopes=claims.pop("scopes", ALL_SCOPES), ttl_s=600, extra=claims or None)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def h(served: tuple[Services, Any, str], tenant: str) -> dict[str, str]:
    return headers_for(served, tenant)


def submit(http: httpx.Client, h: dict[str, str], **extra: Any) -> str:
    resp = http.post(f"{API}/jobs/run", json=job("print('hi')", **extra), headers=h)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


def post(http: httpx.Client, h: dict[str, str], run_id: str, *events: dict[str, Any]) -> None:
    resp = http.post(f"{API}/runs/{run_id}/events", json=list(events), headers=h)
    assert resp.status_code == 202, resp.text


def progress(n: float) -> dict[str, Any]:
    return {"event_type": "progress", "percent": n, "message": f"step {n}"}


def page(http: httpx.Client, h: dict[str, str], run_id: str, *, count: int,
         **params: Any) -> dict[str, Any]:
    """The run's JSON page once it holds `count` events (the read model catches up)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        resp = http.get(f"{API}/runs/{run_id}/events", params=params, headers=h)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        if len(body["events"]) >= count or time.monotonic() > deadline:
            assert len(body["events"]) == count, body
            return body
        time.sleep(0.02)


def events_of(messages: Iterator[Message], n: int) -> list[Message]:
    """The next `n` messages that are not comments."""
    out: list[Message] = []
    for m in messages:
        if m.comment is None:
            out.append(m)
            if len(out) == n:
                break
    return out


def test_the_json_page_lists_a_runs_events_in_order_with_their_versions(
    http: httpx.Client, h: dict[str, str]
) -> None:
    run_id = submit(http, h, labels={"team": "data"})
    post(http, h, run_id, progress(40), {"event_type": "log", "text": "a\nb"},
         {"event_type": "lineage", "source": "public.a", "target": "public.b"})
    body = page(http, h, run_id, count=4)
    assert [(e["version"], e["event"], e["type"]) for e in body["events"]] == [
        (1, "status", "submitted"), (2, "progress", "progress"), (3, "log", "log"),
        (4, "lineage", "lineage")]
    first, prog, logged, _ = body["events"]
    assert first["data"]["status"] == "queued" and first["data"]["labels"] == {"team": "data"}
    assert first["run_id"] == run_id and first["job_type"] == "spark_etl" and first["at"]
    assert prog["data"] == {"percent": 40.0, "message": "step 40"}
    assert logged["data"]["text"] == "a\nb" and logged["data"]["lines"] == 2
    assert body["last_event_id"] == 4 and body["more"] is False and body["ended"] is False
    positions = [e["position"] for e in body["events"]]
    assert positions == sorted(positions)

    two = http.get(f"{API}/runs/{run_id}/events", params={"after": 1, "limit": 2}, headers=h).json()
    assert [e["version"] for e in two["events"]] == [2, 3]
    assert two["more"] is True and two["last_event_id"] == 3

    assert http.post(f"{API}/runs/{run_id}/cancel", headers=h).status_code == 202
    done = page(http, h, run_id, count=2, after=4)
    assert [e["type"] for e in done["events"]] == ["cancel_requested", "cancelled"]
    assert done["ended"] is True and done["events"][-1]["data"]["status"] == "cancelled"
    assert page(http, h, run_id, count=0, after=6)["ended"] is True


def test_events_never_carry_secrets_code_callbacks_or_idempotency_keys(
    http: httpx.Client, h: dict[str, str]
) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    resp = http.post(f"{API}/jobs/run", headers={**h, "Idempotency-Key": "key-" + secret}, json=job(
        f"print('code-{secret}')", spec={"description": "x", "secrets": {"API_TOKEN": secret}},
        callbacks={"on_complete": f"https://example.com/hook?token={secret}"}))
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    body = page(http, h, run_id, count=1)
    assert secret not in msgspec.json.encode(body).decode()
    with sse(http, f"{API}/events", h, last_event_id="0") as messages:
        (first,) = events_of(messages, 1)
    assert first.json()["run_id"] == run_id and secret not in first.data


def test_a_stream_replays_then_goes_live_and_ends_after_the_terminal_event(
    http: httpx.Client, h: dict[str, str]
) -> None:
    run_id = submit(http, h)
    post(http, h, run_id, progress(10))
    page(http, h, run_id, count=2)
    with sse(http, f"{API}/runs/{run_id}/events", h) as messages:
        replayed = events_of(messages, 2)
        assert [(m.id, m.event) for m in replayed] == [("1", "status"), ("2", "progress")]
        post(http, h, run_id, progress(20), {"event_type": "log", "text": "live"})
        live = events_of(messages, 2)
        assert [(m.id, m.event) for m in live] == [("3", "progress"), ("4", "log")]
        assert live[1].json()["data"]["text"] == "live"
        assert http.post(f"{API}/runs/{run_id}/cancel", headers=h).status_code == 202
        rest = [m for m in messages if m.comment is None]
    assert [(m.id, m.event) for m in rest] == [("5", "status"), ("6", "status"), (None, "end")]
    assert rest[-1].json() == {"event": "end", "run_id": run_id, "status": "cancelled",
                               "version": 6}


def test_last_event_id_or_after_resume_a_stream_and_after_the_end_only_end_is_sent(
    http: httpx.Client, h: dict[str, str]
) -> None:
    run_id = submit(http, h)
    post(http, h, run_id, progress(1), progress(2), progress(3))
    http.post(f"{API}/runs/{run_id}/cancel", headers=h)
    page(http, h, run_id, count=6)
    with sse(http, f"{API}/runs/{run_id}/events", h, last_event_id="3") as messages:
        assert [m.id for m in messages if m.comment is None] == ["4", "5", "6", None]
    with sse(http, f"{API}/runs/{run_id}/events?after=5", h) as messages:
        assert [m.id for m in messages if m.comment is None] == ["6", None]
    with sse(http, f"{API}/runs/{run_id}/events", h, last_event_id="6") as messages:
        assert [(m.event, m.json()["status"]) for m in messages if m.comment is None] == [
            ("end", "cancelled")]
    bad = http.get(f"{API}/runs/{run_id}/events", headers={**h, "Last-Event-ID": "x1"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"


def test_an_idle_stream_sends_heartbeat_comments(http: httpx.Client, h: dict[str, str]) -> None:
    run_id = submit(http, h)
    page(http, h, run_id, count=1)
    started = time.monotonic()
    with sse(http, f"{API}/runs/{run_id}/events", h) as messages:
        assert next(messages).id == "1"
        beats = [m for m, _ in zip(messages, range(3), strict=False)]
    assert all(m.comment == "keepalive" for m in beats)
    assert time.monotonic() - started < 3 * HEARTBEAT_S + 2


def test_another_tenants_run_is_a_404_and_the_feed_carries_only_the_callers_tenant(
    served: tuple[Services, Any, str], http: httpx.Client, h: dict[str, str]
) -> None:
    other = headers_for(served, f"tenant-{uuid.uuid4().hex[:8]}")
    theirs = submit(http, other)
    for accept in ("application/json", "text/event-stream"):
        resp = http.get(f"{API}/runs/{theirs}/events", headers={**h, "Accept": accept})
        assert resp.status_code == 404, resp.text
    ours = submit(http, h)
    page(http, h, ours, count=1)
    with sse(http, f"{API}/events", h) as messages:
        post(http, other, theirs, progress(5))
        post(http, h, ours, progress(7))
        (got,) = events_of(messages, 1)
    assert got.json()["run_id"] == ours and got.json()["data"]["percent"] == 7
    feed = http.get(f"{API}/events", params={"after": 0, "limit": 1000}, headers=h).json()
    assert {e["run_id"] for e in feed["events"]} == {ours}
    run_token = headers_for(served, "t", scopes=["runs:write"], run_id=ours, attempt=1)
    assert http.get(f"{API}/runs/{ours}/events", headers=run_token).status_code == 403


def test_the_feed_is_filterable_and_resumable_by_log_position(
    http: httpx.Client, h: dict[str, str]
) -> None:
    a = submit(http, h)
    b = submit(http, h, job_type="diagram_export",
               code={"files": [{"path": "g.dot", "content": "digraph { a -> b }"}]})
    post(http, h, a, progress(1), {"event_type": "log", "text": "a-log"})
    post(http, h, b, progress(2))
    page(http, h, b, count=2)
    every = http.get(f"{API}/events", params={"after": 0}, headers=h).json()["events"]
    assert [(e["run_id"], e["version"]) for e in every] == [(a, 1), (b, 1), (a, 2), (a, 3), (b, 2)]
    params: list[tuple[dict[str, Any], list[tuple[str, int]]]] = [
        ({"run_id": b}, [(b, 1), (b, 2)]),
        ({"job_type": "diagram_export"}, [(b, 1), (b, 2)]),
        ({"event_type": "progress,log"}, [(a, 2), (a, 3), (b, 2)]),
        ({"event_type": "log", "run_id": a}, [(a, 3)]),
    ]
    for query, expected in params:
        got = http.get(f"{API}/events", params={"after": 0, **query}, headers=h).json()["events"]
        assert [(e["run_id"], e["version"]) for e in got] == expected, query
    assert http.get(f"{API}/events", params={"event_type": "nope"}, headers=h).status_code == 422

    resume_at = str(every[2]["position"])  # a's progress: the stream resumes right after it
    with sse(http, f"{API}/events?event_type=progress,log", h, last_event_id=resume_at) as messages:
        replayed = events_of(messages, 2)
        post(http, h, a, progress(3))
        (live,) = events_of(messages, 1)
    assert [m.id for m in replayed] == [str(every[3]["position"]), str(every[4]["position"])]
    assert int(live.id or 0) > int(replayed[-1].id or 0) and live.json()["data"]["percent"] == 3


def test_a_subscriber_that_falls_too_far_behind_is_told_to_resume_and_loses_nothing(
    served: tuple[Services, Any, str], http: httpx.Client, h: dict[str, str]
) -> None:
    run_id = submit(http, h)
    page(http, h, run_id, count=1)
    # A client with a tiny receive window that doesn't read: the server's writes back up.
    host, port = served[2].removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    auth = h["Authorization"]
    sock.sendall(f"GET {API}/runs/{run_id}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream"
                 f"\r\nAuthorization: {auth}\r\n\r\n".encode())
    # 10 MB: more than the kernel's socket buffers (4 MB at most here) and uvicorn's can hold.
    line, batches, per_batch = "x" * 25_000, 16, 25
    for i in range(batches):
        post(http, h, run_id, *({"event_type": "log", "text": f"{i}-{j} {line}"}
                                for j in range(per_batch)))
    total = 1 + batches * per_batch
    page(http, h, run_id, count=1, after=total - 1)
    sock.settimeout(WAIT_S)
    with sock.makefile("rb") as raw:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += raw.read(1)
        body = _dechunk(raw)
    sock.close()
    got = [m for m in parse(body.decode().splitlines()) if m.comment is None]
    assert got[-1].event == "resume", [m.event for m in got[-3:]]
    ids = [int(m.id or 0) for m in got[:-1]]
    last = got[-1].json()["last_event_id"]
    assert ids == list(range(1, len(ids) + 1)) and last == str(ids[-1]) and len(ids) < total
    http.post(f"{API}/runs/{run_id}/cancel", headers=h)
    with sse(http, f"{API}/runs/{run_id}/events", h, last_event_id=last) as messages:
        rest = [m for m in messages if m.comment is None]
    assert [int(m.id) for m in rest[:-1] if m.id] == list(range(int(last) + 1, total + 3))
    assert rest[-1].event == "end"


def _dechunk(raw: Any) -> bytes:
    """The body of a chunked HTTP/1.1 response, read to its end."""
    out = b""
    while True:
        size = int(raw.readline().strip(), 16)
        if size == 0:
            return out
        out += raw.read(size)
        raw.readline()


def test_a_client_that_goes_away_leaves_no_subscription_behind(
    served: tuple[Services, Any, str], http: httpx.Client, h: dict[str, str]
) -> None:
    feed = served[1].state.deps.events.feed
    before = feed.subscribers
    run_id = submit(http, h)
    with sse(http, f"{API}/runs/{run_id}/events", h) as messages:
        assert next(messages).id == "1"
        assert feed.subscribers == before + 1
    deadline = time.monotonic() + WAIT_S
    while feed.subscribers != before:
        assert time.monotonic() < deadline, "the subscription outlived its client"
        time.sleep(0.05)


def test_the_settings_for_streams_come_from_the_environment() -> None:
    from controlroom.settings import from_env

    s = from_env({"CONTROLROOM_SSE_HEARTBEAT_S": "2.5", "CONTROLROOM_SSE_BUFFER": "7"})
    assert (s.sse_heartbeat_s, s.sse_buffer) == (2.5, 7)
