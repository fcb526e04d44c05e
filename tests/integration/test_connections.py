"""Tenant admins manage named connections; a DSN's password is never shown, stored or logged.

Through the API (CRUD, scopes, tenancy, validation) and the `controlroom connections` CLI,
against the session's real service and database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from controlroom.cli import Services, main
from controlroom.domain.connections import connection_id
from controlroom.settings import Settings

CONNECTIONS = "/api/v1/connections"
PASSWORD = "Pa55-w0rd-never-shown"
DSN = f"postgresql://etl_user:{PASSWORD}@db.example.com:5432/warehouse?sslmode=require"
SHOWN = "postgresql://etl_user:***@db.example.com:5432/warehouse?sslmode=require"
PROBLEM_JSON = "application/problem+json"


def assert_nowhere_stored(services: Services, secret: str) -> None:
    """`secret` is in no stored event (raw bytes) and no column of the connections read model."""
    with psycopg.connect(services.dsn) as conn:
        for table in ("controlroom_events", "controlroom_snapshots"):
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                continue
            leaks = conn.execute(f"SELECT count(*) FROM {table} WHERE position(%s::bytea IN state) > 0",
                                 (secret.encode(),)).fetchone()
            assert leaks == (0,), f"secret stored in {table}"
        leaks = conn.execute("SELECT count(*) FROM connections c WHERE c::text LIKE %s",
                             (f"%{secret}%",)).fetchone()
        assert leaks == (0,), "secret stored in the connections read model"


def stored_events(services: Services, tenant: str, name: str) -> int:
    with psycopg.connect(services.dsn) as conn:
        row = conn.execute("SELECT count(*) FROM controlroom_events WHERE originator_id = %s",
                           (connection_id(tenant, name),)).fetchone()
    return int(row[0]) if row else 0


def test_an_admin_creates_reads_lists_replaces_and_deletes_a_connection(
    client: TestClient[Any], auth: dict[str, str], tenant: str, services: Services,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    created = client.put(f"{CONNECTIONS}/warehouse", json={"dsn": DSN}, headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["dsn"] == SHOWN
    assert created.headers["location"] == f"{CONNECTIONS}/warehouse"

    got = client.get(f"{CONNECTIONS}/warehouse", headers=auth)  # read-your-writes: no waiting
    assert got.status_code == 200
    assert got.json()["dsn"] == SHOWN and got.json()["updated_by"] == "alice"
    listed = client.get(CONNECTIONS, headers=auth)
    assert [c["name"] for c in listed.json()["connections"]] == ["warehouse"]

    before = stored_events(services, tenant, "warehouse")
    again = client.put(f"{CONNECTIONS}/warehouse", json={"dsn": DSN}, headers=auth)
    assert again.status_code == 200
    assert stored_events(services, tenant, "warehouse") == before  # the same DSN: nothing new
    moved = DSN.replace("db.example.com", "db2.example.com")
    replaced = client.put(f"{CONNECTIONS}/warehouse", json={"dsn": moved}, headers=auth)
    assert replaced.status_code == 200
    assert client.get(f"{CONNECTIONS}/warehouse", headers=auth).json()["dsn"] == SHOWN.replace(
        "db.example.com", "db2.example.com")

    for resp in (created, got, listed, again, replaced):
        assert PASSWORD not in resp.text
    assert_nowhere_stored(services, PASSWORD)

    assert client.delete(f"{CONNECTIONS}/warehouse", headers=auth).status_code == 204
    assert client.get(f"{CONNECTIONS}/warehouse", headers=auth).status_code == 404
    assert client.get(CONNECTIONS, headers=auth).json() == {"connections": []}
    gone = client.delete(f"{CONNECTIONS}/warehouse", headers=auth)
    assert gone.status_code == 404 and gone.headers["content-type"].startswith(PROBLEM_JSON)
    assert PASSWORD not in caplog.text


def test_a_password_in_the_query_string_is_masked_too(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    dsn = f"postgres://etl_user@db.example.com/warehouse?password={PASSWORD}"
    resp = client.put(f"{CONNECTIONS}/qs", json={"dsn": dsn}, headers=auth)
    assert resp.status_code == 201, resp.text
    assert resp.json()["dsn"] == "postgres://etl_user@db.example.com/warehouse?password=***"


def test_connections_need_the_admin_scope(
    client: TestClient[Any], tenant: str, token: Callable[..., str]
) -> None:
    user = {"Authorization": f"Bearer {token(tenant, scopes=['jobs:write', 'runs:read', 'runs:write'])}"}
    for method, url, body in (("PUT", f"{CONNECTIONS}/db", {"dsn": DSN}), ("GET", CONNECTIONS, None),
                              ("GET", f"{CONNECTIONS}/db", None), ("DELETE", f"{CONNECTIONS}/db", None)):
        resp = client.request(method, url, json=body, headers=user)
        assert resp.status_code == 403, (method, url, resp.text)


def test_another_tenants_connection_is_not_found(
    client: TestClient[Any], auth: dict[str, str], token: Callable[..., str]
) -> None:
    assert client.put(f"{CONNECTIONS}/shared-name", json={"dsn": DSN}, headers=auth).status_code == 201
    other = {"Authorization": f"Bearer {token('tenant-other-' + PASSWORD[:4])}"}
    assert client.get(f"{CONNECTIONS}/shared-name", headers=other).status_code == 404
    assert client.delete(f"{CONNECTIONS}/shared-name", headers=other).status_code == 404
    assert client.get(CONNECTIONS, headers=other).json() == {"connections": []}
    assert client.get(f"{CONNECTIONS}/shared-name", headers=auth).status_code == 200


@pytest.mark.parametrize(("name", "body", "status", "field"), [
    ("Upper", {"dsn": DSN}, 422, "name"),
    ("9lives", {"dsn": DSN}, 422, "name"),
    ("x" * 64, {"dsn": DSN}, 422, "name"),
    ("ok", {"dsn": f"mysql://u:{PASSWORD}@h/db"}, 422, "dsn"),
    ("ok", {"dsn": f"postgresql://u:{PASSWORD}@h:notaport/db"}, 422, "dsn"),
    ("ok", {"dsn": ""}, 422, "dsn"),
    ("ok", {"dsn": DSN, "extra": 1}, 422, "extra"),
    ("ok", {}, 422, "dsn"),
])
def test_bad_names_and_dsns_are_refused_without_echoing_the_dsn(
    client: TestClient[Any], auth: dict[str, str], name: str, body: dict[str, Any], status: int,
    field: str,
) -> None:
    resp = client.put(f"{CONNECTIONS}/{name}", json=body, headers=auth)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)
    assert resp.json()["errors"][0]["field"] == field
    assert PASSWORD not in resp.text


def test_the_cli_sets_lists_and_deletes_connections_without_printing_passwords(
    client: TestClient[Any], auth: dict[str, str], tenant: str, settings: Settings,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cli = ["--data-dir", str(settings.data_dir), "connections"]
    db = ["--database-url", settings.database_url or ""]
    assert main([*cli, *db, "set", "--tenant", tenant, "--by", "ops", "cli-db", DSN]) == 0
    assert main([*cli, *db, "list", "--tenant", tenant]) == 0
    out = capsys.readouterr().out
    assert f"cli-db\t{SHOWN}" in out
    assert PASSWORD not in out

    seen = client.get(f"{CONNECTIONS}/cli-db", headers=auth)  # the API sees what the CLI set
    assert seen.status_code == 200 and seen.json()["updated_by"] == "ops"
    assert main([*cli, *db, "delete", "--tenant", tenant, "cli-db"]) == 0
    assert main([*cli, *db, "delete", "--tenant", tenant, "cli-db"]) == 1
    assert main([*cli, *db, "list", "--tenant", tenant]) == 0
    captured = capsys.readouterr()
    assert "cli-db\t" not in captured.out
    assert "not found" in captured.err
    assert client.get(f"{CONNECTIONS}/cli-db", headers=auth).status_code == 404
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("name", ["never-set", "0", "Not_A_Name"])
def test_deleting_a_connection_the_tenant_never_set_is_not_found_and_records_nothing(
    client: TestClient[Any], auth: dict[str, str], tenant: str, services: Services, name: str,
) -> None:
    """Even a name no connection could have (the API documents 404 for a missing one)."""
    gone = client.delete(f"{CONNECTIONS}/{name}", headers=auth)
    assert gone.status_code == 404, gone.text
    assert gone.headers["content-type"].startswith("application/problem+json")
    assert stored_events(services, tenant, name) == 0
