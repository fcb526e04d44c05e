"""Shared fixtures: a real Postgres database per test session and the running service.

With DATABASE_URL set (CI), a fresh database is created on that server; without it, an
embedded PostgreSQL is started from the wheel — the same one `controlroom serve` uses.

Every test that needs PostgreSQL, Redis or a server process is marked `postgres` here, at
collection, so that `pytest -m "not postgres"` is the fast set: Python alone, no services.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from litestar.testing import TestClient

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services, bootstrap, build_app
from controlroom.settings import Settings

TERMINAL = {"completed", "failed", "cancelled"}

DATABASE_FIXTURES = frozenset({"server_dsn", "make_database", "make_server_database"})
"""Fixtures that reach a PostgreSQL server; everything built on them (`settings`, `services`,
`client`, `token`, `auth`, a module's own) shows up in a test's fixture closure too."""
SERVICE_DIRS = ("e2e", "integration", "contract")
"""Directories of tests that run the service, its processes or its servers, whole: some of
their tests reach PostgreSQL or Redis without a fixture (a subprocess, a URL of their own)."""
_TESTS = Path(__file__).parent


def _needs_services(item: pytest.Item) -> bool:
    if DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    parts = Path(str(item.fspath)).relative_to(_TESTS).parts
    return bool(parts) and parts[0] in SERVICE_DIRS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `postgres` what needs a database, Redis or a server (see the module docstring)."""
    for item in items:
        if _needs_services(item):
            item.add_marker(pytest.mark.postgres)


def _with_db(dsn: str, dbname: str) -> str:
    return urlsplit(dsn)._replace(path=f"/{dbname}").geturl()


@contextmanager
def _embedded_server() -> Iterator[str]:
    """An embedded PostgreSQL of the test session's own, stopped and removed afterwards."""
    from controlroom.adapters.postgres.embedded import EmbeddedPostgres

    # Not under pytest's temp root: another pytest session may reset its mode to 0700, and
    # as root the server runs as an unprivileged user that must traverse to its data dir.
    data_dir = Path(tempfile.mkdtemp(prefix="controlroom-test-pg-"))
    try:
        with EmbeddedPostgres(data_dir) as pg:
            yield pg.dsn
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def _databases_on(server: str) -> Iterator[Callable[[], str]]:
    """make() -> the DSN of a fresh database on `server`; all are dropped afterwards."""
    created: list[str] = []

    def make() -> str:
        name = f"controlroom_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _with_db(server, name)

    try:
        yield make
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            for name in created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A Postgres server to create test databases on."""
    external = os.environ.get("DATABASE_URL")
    if external:
        try:
            psycopg.connect(external, connect_timeout=5).close()
        except psycopg.OperationalError as e:
            pytest.exit(f"DATABASE_URL is set but Postgres is unreachable: {e}", returncode=3)
        yield external
        return
    with _embedded_server() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def make_database(server_dsn: str) -> Iterator[Callable[[], str]]:
    """Creates fresh databases, dropped when the session ends."""
    with _databases_on(server_dsn) as make:
        yield make


@pytest.fixture(scope="session")
def make_server_database() -> Iterator[Callable[[], str]]:
    """Databases for services started beside the session's own (a module's `bootstrap`, a
    `controlroom serve` subprocess).

    Each such service holds its own full set of connections; one or two of them beside the
    session's service would run one server (100 connections for everything) out, so they get
    an embedded PostgreSQL of their own, whether the session's is DATABASE_URL or embedded.
    """
    with _embedded_server() as side, _databases_on(side) as make:
        yield make


@pytest.fixture(scope="session")
def settings(make_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the in-test service: its own database, its own data dir."""
    return Settings(
        database_url=make_database(),
        data_dir=Path(tmp_path_factory.mktemp("data")),
        jwt_secret="test-secret-" + uuid.uuid4().hex,
        worker_slots=4,
    )


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Services]:
    """The service's write side, projections and in-process worker."""
    with bootstrap(settings) as s:
        yield s


@pytest.fixture(scope="session")
def client(services: Services) -> Iterator[TestClient[Any]]:
    """An HTTP client for the API, through Litestar's test client."""
    with TestClient(build_app(services)) as c:
        yield c


@pytest.fixture
def tenant() -> str:
    """A tenant of its own for each test, so tests never see each other's runs."""
    return f"tenant-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def token(services: Services) -> Callable[..., str]:
    """Issues tokens: token(tenant, sub="alice", scopes=ALL_SCOPES, ttl=600)."""

    def make(tenant: str, sub: str = "alice", scopes: Any = ALL_SCOPES, ttl: int = 600) -> str:
        return issue_token(services.jwt_secret, tenant=tenant, sub=sub, scopes=scopes, ttl_s=ttl)

    return make


@pytest.fixture
def auth(tenant: str, token: Callable[..., str]) -> dict[str, str]:
    """Authorization header for this test's tenant with every scope."""
    return {"Authorization": f"Bearer {token(tenant)}"}


def job(source: str, *, job_type: str = "spark_etl", **extra: Any) -> dict[str, Any]:
    """A submission body running `source` as main.py."""
    body: dict[str, Any] = {
        "job_type": job_type,
        "code": {"files": [{"path": "main.py", "content": source}]},
        "spec": {"description": "test job"},
    }
    body.update(extra)
    return body


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def read_back(client: Any, headers: dict[str, str], run_id: str, answer: Any) -> None:
    """Wait until the run's events show the last event of a `POST /runs/{id}/events` `answer`:
    that route answers once its events are in the log, before the read models (which one
    pipeline writes together) show them (docs/api.md, "Reporting events")."""
    last = answer.json()["last_event_id"]

    def shown() -> bool:
        page = client.get(f"/api/v1/runs/{run_id}/events", params={"after": last - 1, "limit": 1},
                          headers=headers).json()
        return bool(page["events"])

    wait_until(shown, what=f"event {last} of run {run_id}")


def wait_for_status(
    client: TestClient[Any], run_id: str, headers: dict[str, str], *,
    statuses: set[str] = TERMINAL, timeout: float = 30.0,
) -> dict[str, Any]:
    """Poll the run until it reaches one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/v1/runs/{run_id}", headers=headers).json()
        if run["status"] in statuses or time.monotonic() > deadline:
            assert run["status"] in statuses, f"run stuck in {run['status']}: {run}"
            return run
        time.sleep(0.05)
