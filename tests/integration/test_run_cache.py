"""Runs kept in memory for writes (`CONTROLROOM_RUN_CACHE`) never hide another process's writes.

Two services over one real PostgreSQL database stand for two processes (an API and a worker,
say), each with its own cache of runs. Every write a process makes is decided on the run as
the log has it, whatever the other process appended since; snapshots are taken from the run
in hand and load the same run a cold process replays.
"""

from __future__ import annotations

import contextlib
import copy
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from controlroom.cli import Services, bootstrap
from controlroom.commands.application import SNAPSHOT_EVERY
from controlroom.commands.messages import Log, Progress, SubmitJob
from controlroom.domain.errors import InvalidTransitionError
from controlroom.settings import Settings

TENANT = "cache-tenant"


@contextlib.contextmanager
def _services(dsn: str, data_dir: Path, cache: int) -> Iterator[Services]:
    settings = Settings(database_url=dsn, data_dir=data_dir, jwt_secret="cache-secret",
                        secret_key="cache-" + "k" * 26, run_cache=cache)
    with bootstrap(settings, run_worker=False, run_projections=False) as services:
        yield services


@pytest.fixture(scope="module")
def database(make_database: Callable[[], str]) -> str:
    return make_database()


@pytest.fixture(scope="module")
def two(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, Services]]:
    """Two processes' services over one database, each caching runs."""
    data_dir = tmp_path_factory.mktemp("cache")
    with _services(database, data_dir, 64) as first, _services(database, data_dir, 64) as second:
        yield first, second


def _submit(services: Services) -> uuid.UUID:
    return services.commands.submit(SubmitJob(
        tenant_id=TENANT, created_by="alice", job_type="spark_etl",
        code={"main.py": "print('hi')"}, spec={"description": "cache"}, secrets={},
        timeout_s=60, max_retries=0, labels={}, callbacks={}, job_name="cache",
        request_hash="h")).run_id


def _logged(dsn: str, run_id: uuid.UUID) -> list[int]:
    """Versions of the run's events in the log, in order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT originator_version FROM controlroom_events "
                            "WHERE originator_id = %s ORDER BY originator_version",
                            (run_id,)).fetchall()
    return [r[0] for r in rows]


def test_writes_alternating_between_two_processes_each_see_the_others(
    two: tuple[Services, Services], database: str,
) -> None:
    a, b = two
    run_id = _submit(a)
    versions = []
    for i in range(20):
        writer = (a, b)[i % 2]  # each write lands on a run the other process just changed
        versions.append(writer.commands.record(TENANT, run_id, [Log(text=f"line {i}\n")]).version)
    assert versions == list(range(2, 22)), "a write was decided on a stale run"
    assert _logged(database, run_id) == list(range(1, 22))
    assert a.commands.load(run_id).version == b.commands.load(run_id).version == 21


def test_a_run_ended_by_another_process_refuses_writes_from_this_one(
    two: tuple[Services, Services],
) -> None:
    a, b = two
    run_id = _submit(a)
    a.commands.record(TENANT, run_id, [Progress(percent=10.0, message="cached here")])
    b.commands.request_cancel(TENANT, run_id, "bob")  # a's cached copy still says queued
    with pytest.raises(InvalidTransitionError):
        a.commands.record(TENANT, run_id, [Log(text="too late\n")])
    assert a.commands.load(run_id).status == "cancelled"


def test_a_decision_never_saved_leaves_the_cached_run_as_the_log_has_it(
    two: tuple[Services, Services], database: str,
) -> None:
    a, _ = two
    run_id = _submit(a)
    before = a.commands.load(run_id)
    version = before.version
    before.request_cancel(by="nobody", now=before.submitted_at)  # decided, never saved
    assert before.status == "cancelled"
    again = a.commands.load(run_id)
    assert again.status == "queued" and not again.pending_events
    assert again.version == version == len(_logged(database, run_id))


def test_snapshots_taken_from_the_run_in_hand_load_the_same_run_cold(
    two: tuple[Services, Services], database: str, tmp_path: Path,
) -> None:
    a, _ = two
    run_id = _submit(a)
    events = 2 * SNAPSHOT_EVERY + 7
    for start in range(0, events, 30):
        a.commands.record(TENANT, run_id, [Log(text=f"line {i}\n")
                                           for i in range(start, min(start + 30, events))])
    with psycopg.connect(database) as conn:
        snapshots = [r[0] for r in conn.execute(
            "SELECT originator_version FROM controlroom_snapshots WHERE originator_id = %s "
            "ORDER BY originator_version", (run_id,)).fetchall()]
    # Appends of 30 pass 50, 100 (and so on): one snapshot for each, at the append's end.
    assert len(snapshots) == 2 and all(v >= SNAPSHOT_EVERY for v in snapshots)
    warm = a.commands.load(run_id)
    with _services(database, tmp_path, 0) as cold_process:
        cold = cold_process.commands.load(run_id)
    assert cold.version == warm.version == events + 1
    assert vars(cold).keys() == vars(warm).keys()
    assert {k: v for k, v in vars(cold).items() if k != "_pending_events"} == \
        {k: v for k, v in vars(warm).items() if k != "_pending_events"}


def test_a_copy_to_decide_on_shares_the_submission_but_not_its_pending_events(
    two: tuple[Services, Services],
) -> None:
    a, _ = two
    run = a.commands.load(_submit(a))
    twin = copy.deepcopy(run)
    assert twin.code is run.code  # never changed after submission: not copied per write
    twin.request_cancel(by="x", now=run.submitted_at)
    assert twin.pending_events and not run.pending_events
    assert run.status == "queued" and twin.status == "cancelled"


def test_a_run_this_process_saved_is_kept_as_saved_not_read_back(
    two: tuple[Services, Services], database: str,
) -> None:
    """The next write to it reads only what others appended since, not its own last append."""
    a, _ = two
    run_id = _submit(a)
    a.commands.record(TENANT, run_id, [Log(text=f"line {i}\n") for i in range(30)])
    cache = a.commands.app.repository.cache
    assert cache is not None
    kept = cache.get(run_id)
    assert kept.version == len(_logged(database, run_id)) == 31
    assert not kept.pending_events


def test_a_write_on_a_run_this_process_holds_reads_nothing_from_the_log(
    two: tuple[Services, Services], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The held copy is decided on as it is; its append's version would catch anything since."""
    a, _ = two
    run_id = _submit(a)
    reads: list[uuid.UUID] = []
    store = a.commands.app.repository.event_store
    real_get = store.get

    def counted(originator_id: uuid.UUID, *args: object, **kwargs: object) -> object:
        reads.append(originator_id)
        return real_get(originator_id, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "get", counted)
    for i in range(5):
        a.commands.record(TENANT, run_id, [Log(text=f"line {i}\n")])
    assert reads == []
    assert a.commands.load(run_id).version == 6


def test_a_refusal_decided_on_a_held_copy_behind_the_log_is_decided_again_on_the_log(
    two: tuple[Services, Services], database: str,
) -> None:
    """a holds the run as queued; b starts it. Completing it is refused on a's copy (a queued
    run can't complete) but stands once decided on the run as the log has it."""
    a, b = two
    run_id = _submit(a)
    a.commands.record(TENANT, run_id, [Progress(percent=1.0, message="held as queued")])
    b.commands.start(run_id, 1, "worker-b")
    position = a.commands.complete(run_id, summary="done", exit_code=0, attempt=1)
    assert a.commands.load(run_id).status == "completed"
    assert _logged(database, run_id) == [1, 2, 3, 4] and position > 0
