"""Schema migrations on real PostgreSQL databases: fresh ones, and ones the previous release made.

The previous release ran `schema.sql` at every start and recorded its sha256 in
`controlroom_schema` (tests/previous_release.py makes such a database). Extra migrations
(0002, 0003) live in a folder of each test's own, beside a copy of the package's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from controlroom.adapters.postgres import migrations
from controlroom.adapters.postgres.database import apply_schema, schema_connection
from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import bootstrap, build_app
from controlroom.settings import Settings
from tests.conftest import job, wait_for_status
from tests.previous_release import SCHEMA_SQL, previous_release
from tests.processes_at_once import at_once

PROCESSES = 6
LIVENESS_S = 120.0

# A later release's migrations: 0003 needs 0002's table, and running either twice fails.
LATER = {
    "0002_run_notes.sql": "CREATE TABLE run_notes (run_id uuid PRIMARY KEY, note text NOT NULL);\n"
                          "INSERT INTO run_notes VALUES ('00000000-0000-0000-0000-000000000001', 'first');\n",
    "0003_run_notes_author.sql": "ALTER TABLE run_notes ADD COLUMN author text NOT NULL DEFAULT 'cli';\n"
                                 "CREATE INDEX run_notes_author ON run_notes (author);\n",
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The package's migrations and a later release's 0002 and 0003."""
    path = tmp_path / "migrations"
    path.mkdir()
    for entry in resources.files("controlroom.migrations").iterdir():
        if entry.name.endswith(".sql"):
            (path / entry.name).write_bytes(entry.read_bytes())
    for name, sql in LATER.items():
        (path / name).write_text(sql)
    return path


def upgrade(dsn: str, folder: Path | None = None) -> list[tuple[str, str]]:
    """Apply the migrations of `folder` (the package's if None): [(file, how)] as reported."""
    seen: list[tuple[str, str]] = []
    with schema_connection(dsn) as conn:
        migrations.upgrade(conn, migrations.available(folder),
                           lambda m, how, _: seen.append((m.filename, how)))
    return seen


def recorded(dsn: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('controlroom_migrations')").fetchone() == (None,):
            return []
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            "SELECT version, name, checksum FROM controlroom_migrations ORDER BY version")]


def catalog(dsn: str) -> dict[str, Any]:
    """The public schema as information_schema and pg_catalog show it (the bookkeeping tables
    of either way of applying the schema left out)."""
    skip = ("controlroom_schema", "controlroom_migrations")
    with psycopg.connect(dsn) as conn:
        def rows(query: str) -> list[tuple[Any, ...]]:
            return sorted(tuple(r) for r in conn.execute(query, (list(skip),)))  # type: ignore[arg-type]

        return {
            "tables": rows("SELECT table_name, table_type FROM information_schema.tables "
                           "WHERE table_schema = 'public' AND NOT table_name = ANY(%s)"),
            "columns": rows(
                "SELECT table_name, ordinal_position, column_name, data_type, udt_name, "
                "is_nullable, column_default FROM information_schema.columns "
                "WHERE table_schema = 'public' AND NOT table_name = ANY(%s)"),
            "indexes": rows("SELECT tablename, indexname, indexdef FROM pg_indexes "
                            "WHERE schemaname = 'public' AND NOT tablename = ANY(%s)"),
            "constraints": rows(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE connamespace = 'public'::regnamespace AND NOT conrelid::regclass::text = ANY(%s)"),
        }


def test_a_fresh_database_gets_every_migration_in_order_once(
    make_database: Callable[[], str], folder: Path,
) -> None:
    dsn = make_database()
    assert upgrade(dsn, folder) == [("0001_initial.sql", "applied"), ("0002_run_notes.sql", "applied"),
                                    ("0003_run_notes_author.sql", "applied")]
    assert [(v, n) for v, n, _ in recorded(dsn)] == [(1, "initial"), (2, "run_notes"),
                                                     (3, "run_notes_author")]
    assert [c for *_, c in recorded(dsn)] == [m.checksum for m in migrations.available(folder)]
    assert upgrade(dsn, folder) == []  # nothing pending: nothing run again (0002 would fail)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT note, author FROM run_notes").fetchall() == [("first", "cli")]


def test_the_package_ships_0001_and_start_up_applies_it(make_database: Callable[[], str]) -> None:
    dsn = make_database()
    applied = apply_schema(dsn)
    assert [m.filename for m in applied] == [m.filename for m in migrations.available()]
    assert applied[0].filename == "0001_initial.sql"
    assert [v for v, *_ in recorded(dsn)] == [m.version for m in migrations.available()]
    assert apply_schema(dsn) == []


def test_the_previous_release_s_database_upgrades_to_the_schema_of_a_fresh_one(
    make_database: Callable[[], str], folder: Path,
) -> None:
    old, fresh = make_database(), make_database()
    previous_release(old)
    with psycopg.connect(old, autocommit=True) as conn:  # the previous release's rows stay
        conn.execute("INSERT INTO run_status_tracking VALUES ('controlroom', 42)")
    assert upgrade(old, folder) == [("0001_initial.sql", "recognised"), ("0002_run_notes.sql", "applied"),
                                    ("0003_run_notes_author.sql", "applied")]
    upgrade(fresh, folder)
    assert catalog(old) == catalog(fresh)
    assert recorded(old) == recorded(fresh)
    with psycopg.connect(old) as conn:
        assert conn.execute("SELECT * FROM run_status_tracking").fetchall() == [("controlroom", 42)]
        # Kept: a process of the previous release started during a rolling deploy finds its
        # digest there and runs nothing.
        assert conn.execute("SELECT count(*) FROM controlroom_schema").fetchone() == (1,)


def test_the_previous_release_s_database_upgraded_at_start_serves(
    make_server_database: Callable[[], str], tmp_path: Path,
) -> None:
    dsn = make_server_database()
    previous_release(dsn)
    settings = Settings(database_url=dsn, data_dir=tmp_path, jwt_secret=uuid.uuid4().hex * 2,
                        secret_key=uuid.uuid4().hex, worker_slots=1)
    headers = {"Authorization": "Bearer " + issue_token(
        settings.jwt_secret or "", tenant="upgraded", sub="alice", scopes=ALL_SCOPES, ttl_s=600)}
    with bootstrap(settings) as services, TestClient(build_app(services)) as client:
        resp = client.post("/api/v1/jobs/run", json=job("print('on the old tables')"), headers=headers)
        assert resp.status_code == 202, resp.text
        run = wait_for_status(client, resp.json()["run_id"], headers)
        assert run["status"] == "completed", run
        listed = client.get("/api/v1/runs", headers=headers).json()
        assert [r["run_id"] for r in listed["runs"]] == [run["run_id"]]
        assert "on the old tables" in client.get(f"/api/v1/runs/{run['run_id']}/logs",
                                                 headers=headers).text
    assert recorded(dsn)[0][:2] == (1, "initial")


def test_position_tables_the_event_store_library_made_are_recognised(
    make_database: Callable[[], str],
) -> None:
    """Releases before the read-model pipeline had the library make `<name>_tracking` (with
    autovacuum settings and a `__migration__` row); schema.sql then left them as they were."""
    dsn = make_database()
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE run_status_tracking (application_name text, notification_id bigint, "
                     "PRIMARY KEY (application_name)) WITH (autovacuum_enabled = true, "
                     "autovacuum_vacuum_threshold = 100000000, autovacuum_vacuum_scale_factor = 0.5)")
        conn.execute("INSERT INTO run_status_tracking VALUES ('__migration__', 1), ('controlroom', 7)")
    previous_release(dsn)
    assert upgrade(dsn) == [("0001_initial.sql", "recognised")]


@pytest.mark.parametrize(("change", "named"), [
    # An older release's schema.sql: no attempt timings yet.
    (lambda sql: sql.replace("ALTER TABLE webhook_attempts ADD COLUMN IF NOT EXISTS started_at "
                             "timestamptz,\n    ADD COLUMN IF NOT EXISTS finished_at timestamptz;", ""),
     "webhook_attempts: column finished_at missing"),
    (lambda sql: sql.replace("CREATE INDEX IF NOT EXISTS artifacts_tenant_position", "CREATE INDEX "
                             "IF NOT EXISTS artifacts_by_tenant"),
     "artifacts: index artifacts_tenant_position missing"),
    # Another application's table of one of our names.
    (lambda sql: "CREATE TABLE connections (id serial PRIMARY KEY, host text);\n" + sql,
     "connections: column display_dsn missing"),
    (lambda sql: sql.replace("CREATE TABLE IF NOT EXISTS dispatch_tracking", "CREATE TABLE IF NOT EXISTS x"),
     "table dispatch_tracking missing"),
], ids=["older release", "index renamed", "another application's table", "table missing"])
def test_tables_unlike_0001_s_are_refused_by_name_and_left_as_they_are(
    make_database: Callable[[], str], change: Callable[[str], str], named: str,
) -> None:
    dsn = make_database()
    previous_release(dsn, change(SCHEMA_SQL.read_text()))
    before = catalog(dsn)
    with pytest.raises(migrations.MigrationError, match=r"0001_initial\.sql") as refused:
        apply_schema(dsn)
    assert named in str(refused.value)
    assert catalog(dsn) == before
    assert recorded(dsn) == []


def test_a_changed_applied_migration_is_refused_with_its_name_and_not_run(
    make_database: Callable[[], str], folder: Path,
) -> None:
    dsn = make_database()
    upgrade(dsn, folder)
    (folder / "0002_run_notes.sql").write_text(LATER["0002_run_notes.sql"] + "-- tidied\n")
    with pytest.raises(migrations.MigrationError, match=r"migration 0002_run_notes\.sql was changed"):
        upgrade(dsn, folder)
    (folder / "0002_run_notes.sql").rename(folder / "0002_notes.sql")
    with pytest.raises(migrations.MigrationError, match=r"0002_notes\.sql.*as 0002_run_notes\.sql"):
        upgrade(dsn, folder)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM run_notes").fetchone() == (1,)


def test_a_failing_migration_is_named_and_leaves_nothing_of_itself(
    make_database: Callable[[], str], folder: Path,
) -> None:
    dsn = make_database()
    (folder / "0003_run_notes_author.sql").write_text(
        "ALTER TABLE run_notes ADD COLUMN author text;\nSELECT 1 / 0;\n")
    with pytest.raises(migrations.MigrationError,
                       match=r"migration 0003_run_notes_author\.sql failed.*DivisionByZero"):
        upgrade(dsn, folder)
    assert [v for v, *_ in recorded(dsn)] == [1, 2]
    with psycopg.connect(dsn) as conn:
        columns = conn.execute("SELECT column_name FROM information_schema.columns "
                               "WHERE table_name = 'run_notes' ORDER BY 1").fetchall()
    assert columns == [("note",), ("run_id",)]


def test_migrations_a_newer_release_applied_don_t_stop_this_one(
    make_database: Callable[[], str], folder: Path,
) -> None:
    """A rolling deploy: the new release's first process applied 0002 and 0003; the old
    release's processes still start."""
    dsn = make_database()
    upgrade(dsn, folder)
    assert apply_schema(dsn) == []


@pytest.mark.parametrize("made_by", ["nothing", "previous release"])
def test_processes_starting_together_apply_each_migration_once(
    make_database: Callable[[], str], folder: Path, made_by: str,
) -> None:
    dsn = make_database()
    if made_by == "previous release":
        previous_release(dsn)
    at_once(upgrade, dsn, folder, processes=PROCESSES, liveness_s=LIVENESS_S)
    assert [v for v, *_ in recorded(dsn)] == [1, 2, 3]
    with psycopg.connect(dsn) as conn:  # 0002's insert ran once
        assert conn.execute("SELECT count(*) FROM run_notes").fetchone() == (1,)
