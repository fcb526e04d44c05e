"""Concurrent writes share appends (group commit) and each keeps its own answer (docs/limits.md).

Against the real HTTP server and PostgreSQL. To make a group form for sure, a test holds the
event log's lock from a connection of its own while the writers queue behind the first append,
then lets go; what is asserted is read back from the log itself.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from controlroom.adapters.postgres.event_store import BoundedAppendRecorder
from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services, bootstrap, build_app
from controlroom.commands.messages import SubmitJob
from controlroom.domain.runs.run import Run
from controlroom.settings import Settings
from tests.conftest import job
from tests.live_events import serve_in_thread

API = "/api/v1"
TABLE = "controlroom_events"


def _service(make_server_database: Callable[[], str], tmp: Any, *, run_projections: bool
             ) -> Iterator[tuple[Services, str]]:
    settings = Settings(database_url=make_server_database(), data_dir=tmp,
                        jwt_secret="group-" + uuid.uuid4().hex)
    with bootstrap(settings, run_worker=False, run_projections=run_projections) as services, \
            serve_in_thread(build_app(services)) as url:
        yield services, url


@pytest.fixture(scope="module")
def served(make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Services, str]]:
    """A service of its own with its read models, without a worker: runs stay queued."""
    yield from _service(make_server_database, tmp_path_factory.mktemp("group"), run_projections=True)


def auth(services: Services, tenant: str = "acme") -> dict[str, str]:
    token = issue_token(services.jwt_secret, tenant=tenant, sub="alice", scopes=ALL_SCOPES, ttl_s=600)
    return {"Authorization": f"Bearer {token}"}


def recorder(services: Services) -> BoundedAppendRecorder:
    rec = services.commands.app.recorder
    assert isinstance(rec, BoundedAppendRecorder)
    return rec


@contextmanager
def log_locked(services: Services) -> Iterator[psycopg.Connection[Any]]:
    """Hold the log's lock (as a long append would) until the block ends."""
    with psycopg.connect(services.dsn) as conn:
        conn.execute(f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE")
        try:
            yield conn
        finally:
            conn.commit()


def wait_for(check: Callable[[], bool]) -> None:
    """Until `check()` holds (a state the test awaits; no timing is asserted)."""
    done = threading.Event()
    while not check():
        done.wait(0.005)


def appends_blocked(services: Services) -> int:
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE relation = %s::regclass "
                           "AND NOT granted", (TABLE,)).fetchone()
        return int(row[0]) if row else 0


def logged(services: Services, run_ids: list[str]) -> list[tuple[int, str, int, str]]:
    """(position, run id, version, text) of the runs' log events, in log order."""
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        return [(r[0], str(r[1]), r[2], r[3]) for r in conn.execute(
            f"SELECT notification_id, originator_id, originator_version, "
            f"convert_from(state, 'UTF8')::jsonb->>'text' FROM {TABLE} "
            "WHERE originator_id = ANY(%s::uuid[]) AND topic LIKE '%%RunLogged' "
            "ORDER BY notification_id", ([uuid.UUID(r) for r in run_ids],)).fetchall()]


def positions_between(services: Services, first: int, last: int) -> int:
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE notification_id BETWEEN %s AND %s",
                           (first, last)).fetchone()
        return int(row[0]) if row else 0


def submit(http: httpx.Client, h: dict[str, str]) -> httpx.Response:
    return http.post(f"{API}/jobs/run", json=job("print('hi')"), headers=h)


def test_concurrent_submissions_and_event_posts_are_all_recorded_each_with_its_answer(
        served: tuple[Services, str]) -> None:
    services, url = served
    h = auth(services)
    with httpx.Client(base_url=url, timeout=60.0) as http:
        runs = [submit(http, h).json()["run_id"] for _ in range(4)]
    posts = [(runs[i % len(runs)], [f"post {i} line {j}" for j in range(3)]) for i in range(16)]

    def post(i: int) -> httpx.Response:
        run_id, lines = posts[i]
        with httpx.Client(base_url=url, timeout=60.0) as http:
            return http.post(f"{API}/runs/{run_id}/events", headers=h, json=[
                {"event_type": "log", "text": line, "stream": "stdout"} for line in lines])

    def submit_one(_: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=60.0) as http:
            return submit(http, h)

    rec = recorder(services)
    with ThreadPoolExecutor(24) as pool:
        # The log is held until every write thread of the API is busy with an append: the first
        # waits for the lock, the others queue behind it and go together once it is let go.
        with log_locked(services):
            event_answers = [pool.submit(post, i) for i in range(16)]
            submissions = [pool.submit(submit_one, i) for i in range(8)]
            wait_for(lambda: appends_blocked(services) >= 1 and rec.appends_waiting >= 2)
        answers = [f.result() for f in event_answers]
        submitted = [f.result() for f in submissions]

    assert [r.status_code for r in answers + submitted] == [202] * 24, [r.text for r in answers]
    new_runs = [r.json()["run_id"] for r in submitted]
    assert len(set(new_runs)) == 8
    with httpx.Client(base_url=url, timeout=60.0) as http:  # read-your-writes, as before
        assert all(http.get(f"{API}/runs/{rid}", headers=h).status_code == 200 for rid in new_runs)

    rows = logged(services, runs)
    assert len(rows) == 16 * 3
    by_text = {text: (position, run_id, version) for position, run_id, version, text in rows}
    for i, (run_id, lines) in enumerate(posts):
        mine = [by_text[line] for line in lines]
        positions = [p for p, _, _ in mine]
        # Each request's events: its run's, in its order, next to each other in the log.
        assert all(r == run_id for _, r, _ in mine)
        assert positions == list(range(positions[0], positions[0] + 3))
        assert positions_between(services, positions[0], positions[-1]) == 3
        body = answers[i].json()
        assert body["accepted"] == 3 and body["status"] == "queued"
        assert body["last_event_id"] == mine[-1][2]
    for run_id in runs:  # every run's versions, gapless, in log order
        versions = [v for _, r, v, _ in rows if r == run_id]
        assert versions == list(range(2, 2 + len(versions)))


def test_a_conflicting_write_in_a_group_is_the_only_one_refused(served: tuple[Services, str]) -> None:
    services, _ = served
    app, commands = services.commands.app, services.commands

    def submitted() -> str:
        cmd = SubmitJob(tenant_id="acme", created_by="alice", client=None, job_type="spark_etl",
                        code={"files": []}, spec={}, secrets={}, timeout_s=60, max_retries=0,
                        labels={}, callbacks={}, job_name="group", request_hash="h",
                        idempotency_key=None)
        return str(commands.submit(cmd).run_id)

    contested, *others = [submitted() for _ in range(4)]
    # Two workers racing: each loaded the run at the same version and logs on top of it.
    racers: list[Run] = [app.repository.get(uuid.UUID(contested)) for _ in range(2)]
    mates: list[Run] = [app.repository.get(uuid.UUID(r)) for r in others]
    writes: list[Run] = [mates[0], racers[0], mates[1], racers[1], mates[2]]
    for i, run in enumerate(writes):
        for j in range(2):
            run.log(text=f"write {i} line {j}", stream="stdout", lines=1, now=run.submitted_at)

    outcomes: dict[int, Any] = {}

    def save(i: int) -> None:
        try:
            outcomes[i] = [r.notification.id for r in app.save(writes[i])]
        except IntegrityError as e:
            outcomes[i] = e

    rec = recorder(services)
    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(writes))]
    with log_locked(services):
        threads[0].start()
        wait_for(lambda: appends_blocked(services) >= 1)
        for n, t in enumerate(threads[1:], start=1):  # one by one: the group keeps their order
            t.start()
            wait_for(lambda n=n: rec.appends_waiting >= n)  # type: ignore[misc]
    for t in threads:
        t.join(30)

    refused = [i for i, o in outcomes.items() if isinstance(o, IntegrityError)]
    assert refused == [3]  # the later of the two racers, and no one else
    rows = logged(services, [contested, *others])
    by_text = {text: (position, run_id, version) for position, run_id, version, text in rows}
    assert not any(t.startswith("write 3 ") for t in by_text)
    for i in (0, 1, 2, 4):
        mine = [by_text[f"write {i} line {j}"] for j in range(2)]
        assert [p for p, _, _ in mine] == outcomes[i]
        assert outcomes[i][1] == outcomes[i][0] + 1
        assert [v for _, _, v in mine] == [2, 3]
    # Group-mates 1, 2 and 4 are in the log in the order they queued, with nothing between.
    assert outcomes[0][1] < outcomes[1][0] < outcomes[2][0] < outcomes[4][0]
    assert positions_between(services, outcomes[1][0], outcomes[4][1]) == 6


@pytest.fixture(scope="module")
def unfed(make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Services, str]]:
    """A service whose read models are not fed (as with `serve --no-projections` and no
    projector running)."""
    yield from _service(make_server_database, tmp_path_factory.mktemp("unfed"), run_projections=False)


def test_reported_events_are_answered_once_in_the_log_without_waiting_for_read_models(
        unfed: tuple[Services, str]) -> None:
    services, url = unfed
    cmd = SubmitJob(tenant_id="acme", created_by="alice", client=None, job_type="spark_etl",
                    code={"files": []}, spec={}, secrets={}, timeout_s=60, max_retries=0,
                    labels={}, callbacks={}, job_name="unfed", request_hash="h",
                    idempotency_key=None)
    run_id = str(services.commands.submit(cmd).run_id)
    with httpx.Client(base_url=url, timeout=60.0) as http:
        h = auth(services)
        resp = http.post(f"{API}/runs/{run_id}/events", headers=h, json=[
            {"event_type": "log", "text": f"unfed {j}", "stream": "stdout"} for j in range(3)])
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"run_id": run_id, "status": "queued", "accepted": 3,
                               "last_event_id": 4}
        # The read model never saw the run; the log has the events.
        assert http.get(f"{API}/runs/{run_id}", headers=h).json()["visible"] is False
    assert [(v, t) for _, _, v, t in logged(services, [run_id])] == [
        (2, "unfed 0"), (3, "unfed 1"), (4, "unfed 2")]
