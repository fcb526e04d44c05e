"""`controlroom projections rebuild`: read models rebuilt from the log, with progress.

A served app (uvicorn in a thread, no worker, its own database) hosts the projections, as a
running `controlroom serve` would; the CLI runs in the test's thread and asks it to rebuild
through the database, exactly as an operator's second process does. Damage is done to the
read models by hand, the way a bad deploy or a manual fix-up would, so a rebuild has
something to repair that a user can see through the API.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services, bootstrap, build_app, main
from controlroom.settings import Settings
from tests.conftest import job, wait_until
from tests.integration.test_lineage_graph import ol_event
from tests.live_events import Message, serve_in_thread, sse

API = "/api/v1"
WAIT_S = 20.0
SECRET = "rebuild-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def served(make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Services, str]]:
    """(services, base url) over a database of its own, with no worker: runs stay queued."""
    settings = Settings(database_url=make_server_database(), data_dir=tmp_path_factory.mktemp("rebuild"),
                        jwt_secret=SECRET)
    with bootstrap(settings, run_worker=False) as services, \
            serve_in_thread(build_app(services)) as url:
        yield services, url


@pytest.fixture
def http(served: tuple[Services, str], tenant: str) -> Iterator[httpx.Client]:
    token = issue_token(SECRET, tenant=tenant, sub="alice", scopes=ALL_SCOPES, ttl_s=600)
    with httpx.Client(base_url=served[1], timeout=WAIT_S,
                      headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def run_cli(dsn: str, data_dir: Any, *args: str, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`controlroom projections ARGS` against `dsn`: (exit code, stdout, stderr)."""
    monkeypatch.setenv("DATABASE_URL", dsn)
    monkeypatch.setenv("CONTROLROOM_DATA_DIR", str(data_dir))
    monkeypatch.delenv("REDIS_URL", raising=False)
    capsys.readouterr()
    code = main(["projections", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def cli(served: tuple[Services, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    services = served[0]
    return lambda *args: run_cli(services.dsn, services.settings.data_dir, *args,
                                 monkeypatch=monkeypatch, capsys=capsys)


def submit(http: httpx.Client) -> str:
    resp = http.post(f"{API}/jobs/run", json=job("print('hi')"))
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


def post(http: httpx.Client, run_id: str, *events: dict[str, Any]) -> None:
    resp = http.post(f"{API}/runs/{run_id}/events", json=list(events))
    assert resp.status_code == 202, resp.text


def eventually(check: Callable[[], Any], what: str) -> Any:
    return wait_until(check, timeout=WAIT_S, what=what)


def seen_by_a_user(http: httpx.Client, run_ids: list[str]) -> list[Any]:
    """Each run as the API shows it: status, its event page and its log."""
    shown = []
    for run_id in run_ids:
        run = http.get(f"{API}/runs/{run_id}").json()
        events = http.get(f"{API}/runs/{run_id}/events", params={"limit": 1000}).json()["events"]
        shown.append((run, events, http.get(f"{API}/runs/{run_id}/logs").text))
    return shown


def execute(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def test_damaged_run_models_are_rebuilt_from_the_log_while_the_service_runs(
    served: tuple[Services, str], http: httpx.Client, cli: Callable[..., tuple[int, str, str]],
) -> None:
    run_ids = [submit(http) for _ in range(3)]
    for n, run_id in enumerate(run_ids):
        post(http, run_id, {"event_type": "progress", "percent": 40, "message": "loading"},
             {"event_type": "log", "stream": "stdout", "text": f"run {n} says hello\n"})
    assert http.post(f"{API}/runs/{run_ids[0]}/cancel").status_code == 202
    eventually(lambda: http.get(f"{API}/runs/{run_ids[0]}").json()["status"] == "cancelled",
               "the cancellation")
    eventually(lambda: all("hello" in http.get(f"{API}/runs/{r}/logs").text for r in run_ids),
               "the logs")
    before = seen_by_a_user(http, run_ids)

    dsn = served[0].dsn
    execute(dsn, "UPDATE run_status SET status = 'failed', progress_percent = 0")
    execute(dsn, "DELETE FROM run_events WHERE version > 1")
    execute(dsn, "DELETE FROM run_log_chunks")
    assert seen_by_a_user(http, run_ids) != before

    code, out, err = cli("rebuild", "--timeout", "60", "run_status", "run_events")
    assert code == 0, err
    assert "run_status: rebuilt up to position" in out
    assert "run_events: rebuilt up to position" in out
    assert seen_by_a_user(http, run_ids) == before

    code, out, _ = cli("status")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["run_status"][2] == "0", out  # not behind the log
    assert rows["run_status"][4] == "pid", out  # and hosted by the running service
    # Reads of one's own writes still hold after a rebuild.
    new = submit(http)
    assert http.get(f"{API}/runs/{new}").status_code == 200


def test_a_run_completed_on_retry_shows_no_error_and_a_rebuild_agrees(
    served: tuple[Services, str], http: httpx.Client, cli: Callable[..., tuple[int, str, str]],
) -> None:
    # No worker here: the attempts are recorded through the write side, as a worker would.
    resp = http.post(f"{API}/jobs/run", json=job("print('hi')", max_retries=1))
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    commands = served[0].commands
    rid = uuid.UUID(run_id)
    commands.start(rid, 1, "w1")
    commands.fail(rid, reason="exit_code", message="boom on attempt 1", exit_code=3, attempt=1)
    queued = eventually(lambda: (r := http.get(f"{API}/runs/{run_id}").json())["attempt"] == 2
                        and r, "the retry")
    assert queued["status"] == "queued"
    assert queued["error"]["message"] == "boom on attempt 1"  # why it is being retried
    commands.start(rid, 2, "w2")
    running = eventually(lambda: (r := http.get(f"{API}/runs/{run_id}").json())["status"]
                         == "running" and r, "attempt 2 starting")
    assert running["error"] is None and running["exit_code"] is None
    commands.complete(rid, summary="done", exit_code=0, attempt=2)
    done = eventually(lambda: (r := http.get(f"{API}/runs/{run_id}").json())["status"]
                      == "completed" and r, "the completion")
    assert done["error"] is None and done["exit_code"] == 0 and done["attempt"] == 2
    before = seen_by_a_user(http, [run_id])
    events = before[0][1]
    assert any("boom on attempt 1" in str(e) for e in events), events

    code, _, err = cli("rebuild", "--timeout", "60", "run_status")
    assert code == 0, err
    assert seen_by_a_user(http, [run_id]) == before


def test_a_live_stream_misses_and_repeats_nothing_across_a_rebuild(
    http: httpx.Client, cli: Callable[..., tuple[int, str, str]],
) -> None:
    run_id = submit(http)
    received: list[Message] = []

    def watch() -> None:
        with sse(http, f"{API}/runs/{run_id}/events", {}, timeout=WAIT_S) as messages:
            for m in messages:
                if m.comment is None:
                    received.append(m)
                    if m.event == "end":
                        return

    watcher = threading.Thread(target=watch)
    watcher.start()
    eventually(lambda: received,
               "the stream to replay the submission")
    for i in range(20):
        post(http, run_id, {"event_type": "progress", "percent": i, "message": f"before {i}"})
    code, _, err = cli("rebuild", "--timeout", "60", "run_events")
    assert code == 0, err
    for i in range(20):
        post(http, run_id, {"event_type": "progress", "percent": 50 + i, "message": f"after {i}"})
    assert http.post(f"{API}/runs/{run_id}/cancel").status_code == 202
    watcher.join(WAIT_S)
    assert not watcher.is_alive(), f"the stream did not end: {[m.id for m in received]}"
    ids = [int(m.id) for m in received if m.event != "end" and m.id is not None]
    assert ids == list(range(1, len(ids) + 1)), ids
    assert len(ids) == 1 + 40 + 2  # submitted, 40 progress events, cancel requested + cancelled


def test_the_lineage_graph_in_a_running_api_shows_the_rebuilt_model(
    served: tuple[Services, str], http: httpx.Client, tenant: str,
    cli: Callable[..., tuple[int, str, str]],
) -> None:
    assert http.post(f"{API}/lineage", json=ol_event(["raw.orders"], ["mart.orders"])).status_code == 201

    def upstream() -> set[str]:
        r = http.get(f"{API}/lineage/graph", params={"entity": "mart.orders", "direction": "upstream"})
        assert r.status_code == 200, r.text
        return {u["entity"] for u in r.json()["upstream"]}

    assert upstream() == {"raw.orders"}
    execute(served[0].dsn, f"""
        INSERT INTO lineage_edges (tenant_id, source, target, job_id, job_namespace, job_name,
            first_run_id, last_run_id, first_seen, last_seen, first_position, position)
        VALUES ('{tenant}', 'bogus.orders', 'mart.orders', gen_random_uuid(), 'x', 'x', 'r', 'r',
                now(), now(), 1000000000, 1000000000)""")
    eventually(lambda: upstream() == {"raw.orders", "bogus.orders"},
               "the API to load the bad row")

    code, _, err = cli("rebuild", "--timeout", "60", "lineage")
    assert code == 0, err
    eventually(lambda: upstream() == {"raw.orders"},
               "the API to drop what the log never said")


@pytest.mark.parametrize(("args", "says"), [
    (("rebuild", "webhooks"), "would send every callback ever made again"),
    (("rebuild", "dispatch"), "would queue every run ever submitted again"),
    (("rebuild", "run_status", "nonsense"), "no projection 'nonsense'; rebuildable: run_status"),
    (("rebuild",), "name the projections to rebuild, or --all"),
])
def test_what_cannot_be_rebuilt_is_refused_and_nothing_is_asked(
    served: tuple[Services, str], cli: Callable[..., tuple[int, str, str]], args: tuple[str, ...],
    says: str,
) -> None:
    with psycopg.connect(served[0].dsn) as conn:
        conn.execute("DELETE FROM projection_rebuilds WHERE state = 'done'")
    code, _, err = cli(*args)
    assert code == 2
    assert says in err
    with psycopg.connect(served[0].dsn) as conn:
        assert conn.execute("SELECT count(*) FROM projection_rebuilds").fetchone() == (0,)


MODELS = {  # what each rebuilt table must hold again, row for row
    "run_status": "SELECT run_id, status, progress_percent, progress_message FROM run_status",
    "run_events": "SELECT run_id, version, type, data::text FROM run_events",
    "run_log_chunks": "SELECT run_id, position, text FROM run_log_chunks",
    "lineage_edges": "SELECT source, target, seen_count, first_position, position FROM lineage_edges",
}


def test_with_no_service_running_the_cli_rebuilds_a_long_log_on_its_own(
    make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory, tenant: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Long enough (> BATCH_EVENTS) that the replay shares transactions between events."""
    settings = Settings(database_url=make_server_database(), data_dir=tmp_path_factory.mktemp("alone"),
                        jwt_secret=SECRET)
    token = issue_token(SECRET, tenant=tenant, sub="alice", scopes=ALL_SCOPES, ttl_s=600)
    with bootstrap(settings, run_worker=False) as services, \
            serve_in_thread(build_app(services)) as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        run_ids = [submit(http) for _ in range(5)]
        for n, run_id in enumerate(run_ids):
            for batch in range(5):
                post(http, run_id, *[
                    {"event_type": "progress", "percent": i, "message": f"{batch}/{i}"} if i % 3 else
                    {"event_type": "log", "text": f"run {n} line {batch}/{i}\n"} if i % 2 else
                    {"event_type": "lineage", "source": f"raw.t{i % 7}", "target": f"mart.t{n}"}
                    for i in range(50)])
        assert http.post(f"{API}/runs/{run_ids[0]}/cancel").status_code == 202
        eventually(lambda: http.get(f"{API}/runs/{run_ids[0]}").json()["status"] == "cancelled",
                   "the cancellation")
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        assert conn.execute("SELECT max(notification_id) FROM controlroom_events").fetchone()[0] > 1200
        before = {t: sorted(conn.execute(q).fetchall()) for t, q in MODELS.items()}
        conn.execute("TRUNCATE run_status, run_events, run_log_chunks, lineage_edges")

    code, out, err = run_cli(services.dsn, settings.data_dir, "rebuild", "--all", "--timeout", "60",
                             monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "run_status", "connections", "run_events", "lineage", "api_keys"]
    with psycopg.connect(services.dsn) as conn:
        assert {t: sorted(conn.execute(q).fetchall()) for t, q in MODELS.items()} == before
        # Nobody hosts the projections once the command has ended.
        assert conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchone() == (0,)
