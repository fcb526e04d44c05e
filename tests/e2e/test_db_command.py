"""`controlroom db upgrade | status`, and start-up refusing a changed migration, as processes.

The installed command runs from a directory away from the checkout, so the migrations it
applies are those the package ships.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.previous_release import previous_release

TIMEOUT_S = 60.0


@pytest.fixture
def controlroom(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs `controlroom ARGS…` from outside the checkout; returns the finished process."""
    script = Path(sys.executable).with_name("controlroom")
    cmd = [str(script)] if script.exists() else [sys.executable, "-P", "-m", "controlroom.cli"]
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "PYTHONPATH") and not k.startswith("CONTROLROOM_")}
    env["CONTROLROOM_DATA_DIR"] = str(tmp_path / "data")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cmd, *args], cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S, check=False)

    return run


def test_upgrade_prints_each_migration_it_applies_and_status_lists_them(
    make_database: Callable[[], str], controlroom: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    dsn = make_database()
    before = controlroom("db", "--database-url", dsn, "status")
    assert before.returncode == 0, before.stderr
    assert _rows(before.stdout) == [["0001_initial.sql", "pending"]]
    assert "1 pending" in before.stdout

    upgrade = controlroom("db", "--database-url", dsn, "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.stdout.splitlines()[0].startswith("applied 0001_initial.sql (")

    after = controlroom("db", "--database-url", dsn, "status")
    assert after.returncode == 0, after.stderr
    assert [row[:2] for row in _rows(after.stdout)] == [["0001_initial.sql", "applied"]]
    assert after.stdout.splitlines()[-1] == "up to date"

    again = controlroom("db", "--database-url", dsn, "upgrade")
    assert (again.returncode, again.stdout) == (0, "nothing to apply: the database is up to date\n")


def test_upgrade_recognises_the_previous_release_s_database(
    make_database: Callable[[], str], controlroom: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    dsn = make_database()
    previous_release(dsn)
    status = controlroom("db", "--database-url", dsn, "status")
    assert status.returncode == 0, status.stderr
    assert "made by schema.sql" in status.stdout
    upgrade = controlroom("db", "--database-url", dsn, "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.stdout.startswith("recognised 0001_initial.sql: its tables were there, made by "
                                     "schema.sql (")


def test_a_changed_migration_is_refused_by_name_at_upgrade_status_and_start(
    make_database: Callable[[], str], controlroom: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    dsn = make_database()
    assert controlroom("db", "--database-url", dsn, "upgrade").returncode == 0
    with psycopg.connect(dsn, autocommit=True) as conn:  # as if the file had been edited since
        conn.execute("UPDATE controlroom_migrations SET checksum = repeat('0', 64) WHERE version = 1")
    said = "migration 0001_initial.sql was changed after it was applied"
    upgrade = controlroom("db", "--database-url", dsn, "upgrade")
    assert upgrade.returncode == 1 and said in upgrade.stderr, upgrade.stderr
    status = controlroom("db", "--database-url", dsn, "status")
    assert status.returncode == 1 and said in status.stderr, status.stderr
    assert [row[:2] for row in _rows(status.stdout)] == [["0001_initial.sql", "CHANGED"]]
    start = controlroom("projector", "--database-url", dsn)
    assert start.returncode == 1 and said in start.stderr, start.stderr


def _rows(out: str) -> list[list[str]]:
    """The status table's rows, split on whitespace."""
    return [line.split() for line in out.splitlines() if line.startswith("0")]
