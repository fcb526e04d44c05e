"""Tenant admins issue API keys for headless clients; a key is shown once and stored only hashed.

Through the API (create, list, revoke, tenancy, scopes, validation), as a bearer credential
(expired, revoked, malformed and unknown keys are a 401 that changes nothing), and through the
`controlroom api-keys` CLI, against the session's real service and database.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from controlroom.api.api_keys.auth import CACHE_TTL_S
from controlroom.cli import Services, main
from controlroom.cli.hosts import read_models
from controlroom.commands.api_keys import ApiKeyCommands
from controlroom.domain.api_keys import key_hash
from controlroom.settings import Settings
from tests.conftest import job

KEYS = "/api/v1/api-keys"
RUNS = "/api/v1/runs"
SUBMIT = "/api/v1/jobs/run"
PROBLEM_JSON = "application/problem+json"


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def assert_problem(resp: Any, status: int, *, field: str | None = None) -> dict[str, Any]:
    """The response is a problem document with this status (naming `field`, if given)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON
    body = resp.json()
    assert body["status"] == status and body["title"] and body["detail"].strip()
    if field is not None:
        assert field in [e["field"] for e in body.get("errors") or []], body
    return body


def create(client: TestClient[Any], auth: dict[str, str], **body: Any) -> dict[str, Any]:
    resp = client.post(KEYS, json={"name": "ci", **body}, headers=auth)
    assert resp.status_code == 201, resp.text
    return resp.json()


def assert_nowhere_stored(services: Services, key: str) -> None:
    """The key is in no stored event (raw bytes) and no column of the api_keys read model."""
    with psycopg.connect(services.dsn) as conn:
        for table in ("controlroom_events", "controlroom_snapshots"):
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                continue
            leaks = conn.execute(f"SELECT count(*) FROM {table} WHERE position(%s::bytea IN state) > 0",
                                 (key.encode(),)).fetchone()
            assert leaks == (0,), f"API key stored in {table}"
        leaks = conn.execute("SELECT count(*) FROM api_keys k WHERE k::text LIKE %s",
                             (f"%{key[3:]}%",)).fetchone()
        assert leaks == (0,), "API key stored in the api_keys read model"


@pytest.fixture
def changes(services: Services) -> Iterator[Callable[[], int]]:
    """Counts new aggregates and API key events: what a rejected request must not add to."""
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        def count() -> int:
            row = conn.execute("SELECT count(*) FROM controlroom_events WHERE originator_version = 1 "
                               "OR topic LIKE '%%api_key%%'").fetchone()
            return int(row[0]) if row else 0

        yield count


def test_an_admin_creates_a_key_that_is_shown_once_and_then_works_as_a_bearer_token(
    client: TestClient[Any], auth: dict[str, str], tenant: str, services: Services,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    created = client.post(KEYS, json={"name": "nightly CI", "scopes": ["jobs:write", "runs:read"],
                                      "expires_in_days": 30}, headers=auth)
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    new = created.json()
    key = new["key"]
    assert key.startswith("cr_") and len(key) >= 3 + 43 and new["last4"] == key[-4:]
    assert new["scopes"] == ["jobs:write", "runs:read"] and new["created_by"] == "alice"
    expires = datetime.fromisoformat(new["expires_at"]) - datetime.fromisoformat(new["created_at"])
    assert expires == timedelta(days=30)

    listed = client.get(KEYS, headers=auth)  # read-your-writes: no waiting
    assert listed.status_code == 200
    [shown] = listed.json()["api_keys"]
    assert shown == {k: v for k, v in new.items() if k != "key"}
    assert key not in listed.text and key_hash(key) not in listed.text

    submitted = client.post(SUBMIT, json=job("print('from CI')"), headers=bearer(key))
    assert submitted.status_code == 202, submitted.text
    run = client.get(f"{RUNS}/{submitted.json()['run_id']}", headers=bearer(key)).json()
    assert run["created_by"] == f"api-key:{new['id']}"
    assert key not in run.__repr__()
    assert client.get(RUNS, headers=auth).json()["runs"][0]["run_id"] == run["run_id"]

    assert key not in caplog.text
    assert_nowhere_stored(services, key)


def test_a_revoked_key_stops_working_at_once_and_revoking_it_again_is_a_404(
    client: TestClient[Any], auth: dict[str, str], changes: Callable[[], int],
) -> None:
    new = create(client, auth, scopes=["runs:read"])
    assert client.get(RUNS, headers=bearer(new["key"])).status_code == 200  # now cached

    assert client.delete(f"{KEYS}/{new['id']}", headers=auth).status_code == 204
    before = changes()
    refused = client.get(RUNS, headers=bearer(new["key"]))
    assert "revoked" in assert_problem(refused, 401)["detail"]
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert client.get(KEYS, headers=auth).json()["api_keys"] == []
    assert_problem(client.delete(f"{KEYS}/{new['id']}", headers=auth), 404)
    assert changes() == before


def test_another_tenants_key_is_not_listed_and_cannot_be_revoked(
    client: TestClient[Any], auth: dict[str, str], token: Callable[..., str],
    changes: Callable[[], int],
) -> None:
    new = create(client, auth)
    mallory = bearer(token("tenant-mallory"))
    before = changes()
    assert new["id"] not in client.get(KEYS, headers=mallory).text
    assert "not found" in assert_problem(client.delete(f"{KEYS}/{new['id']}", headers=mallory),
                                         404)["detail"]
    assert changes() == before
    assert client.get(RUNS, headers=bearer(new["key"])).status_code == 200  # still working


def test_a_key_only_reaches_its_own_tenants_runs(
    client: TestClient[Any], auth: dict[str, str], token: Callable[..., str],
) -> None:
    other = bearer(token("tenant-other"))
    theirs = client.post(SUBMIT, json=job("print('theirs')"), headers=other)
    assert theirs.status_code == 202
    key = create(client, auth)["key"]
    assert_problem(client.get(f"{RUNS}/{theirs.json()['run_id']}", headers=bearer(key)), 404)
    assert client.get(RUNS, headers=bearer(key)).json()["runs"] == []


def test_an_expired_key_is_a_401_saying_so_and_changes_nothing(
    client: TestClient[Any], auth: dict[str, str], tenant: str, services: Services,
    changes: Callable[[], int],
) -> None:
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    back_then = ApiKeyCommands(services.api_keys.app, clock=lambda: two_days_ago)
    issued = back_then.issue(tenant, "old", None, 1, "alice")
    assert services.api_key_store.wait_caught_up(5)
    before = changes()
    refused = client.post(SUBMIT, json=job("print('nope')"), headers=bearer(issued.key))
    assert "expired" in assert_problem(refused, 401)["detail"]
    assert changes() == before
    assert client.get(RUNS, headers=auth).json()["runs"] == []


@pytest.mark.parametrize("credential", [
    "cr_", "cr_short", "cr_" + "!" * 43, "cr_" + secrets.token_urlsafe(32) + " extra",
    "cr_" + secrets.token_urlsafe(32),  # well-formed, but never issued
])
def test_a_malformed_or_unknown_key_is_a_401_and_changes_nothing(
    client: TestClient[Any], credential: str, changes: Callable[[], int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    before = changes()
    for method, url in (("POST", SUBMIT), ("GET", RUNS), ("POST", KEYS)):
        resp = client.request(method, url, json=job("print(1)"), headers=bearer(credential))
        assert "API key" in assert_problem(resp, 401)["detail"]
        assert credential[3:] not in resp.text or credential == "cr_"
    assert changes() == before
    assert credential not in caplog.text


def test_a_key_without_the_needed_scope_is_a_403_and_changes_nothing(
    client: TestClient[Any], auth: dict[str, str], changes: Callable[[], int],
) -> None:
    reader = bearer(create(client, auth, scopes=["runs:read"])["key"])
    before = changes()
    assert "jobs:write" in assert_problem(client.post(SUBMIT, json=job("print(1)"), headers=reader),
                                          403)["detail"]
    assert "admin" in assert_problem(client.post(KEYS, json={"name": "x"}, headers=reader),
                                     403)["detail"]
    assert_problem(client.get(KEYS, headers=reader), 403)
    assert changes() == before


def test_api_keys_need_the_admin_scope(
    client: TestClient[Any], tenant: str, token: Callable[..., str], changes: Callable[[], int],
) -> None:
    writer = bearer(token(tenant, scopes=["jobs:write", "runs:read", "runs:write"]))
    before = changes()
    assert_problem(client.post(KEYS, json={"name": "x"}, headers=writer), 403)
    assert_problem(client.get(KEYS, headers=writer), 403)
    assert changes() == before


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"name": "ci", "scopes": ["jobs:write", "root"]}, 422, "scopes[1]"),
    ({"name": "ci", "scopes": []}, 422, "scopes"),
    ({"name": "ci", "expires_in_days": 0}, 422, "expires_in_days"),
    ({"name": "ci", "expires_in_days": 100_000}, 422, "expires_in_days"),
    ({"name": ""}, 422, "name"),
    ({"name": "   "}, 422, "name"),
    ({"name": "tab\there"}, 422, "name"),
    ({"name": "ci", "key": "cr_mine"}, 422, "key"),
    ({}, 422, "name"),
    ([], 400, None),
])
def test_a_bad_key_request_is_refused_naming_the_field_and_creates_nothing(
    client: TestClient[Any], auth: dict[str, str], body: Any, status: int, field: str | None,
    changes: Callable[[], int],
) -> None:
    before = changes()
    assert_problem(client.post(KEYS, json=body, headers=auth), status, field=field)
    assert changes() == before
    assert client.get(KEYS, headers=auth).json()["api_keys"] == []


def test_revoking_an_id_that_is_not_a_key_is_a_404(
    client: TestClient[Any], auth: dict[str, str],
) -> None:
    run = client.post(SUBMIT, json=job("print(1)"), headers=auth).json()["run_id"]
    for key_id in ("not-a-uuid", "00000000-0000-0000-0000-000000000000", run):
        assert_problem(client.delete(f"{KEYS}/{key_id}", headers=auth), 404)


def test_the_cli_creates_lists_and_revokes_keys_and_revocation_reaches_the_api_within_the_bound(
    client: TestClient[Any], auth: dict[str, str], tenant: str, settings: Settings,
    services: Services, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cli = ["--data-dir", str(settings.data_dir), "api-keys", "--database-url",
           settings.database_url or ""]
    assert main([*cli, "create", "--tenant", tenant, "--name", "deploy", "--by", "ops",
                 "--scope", "runs:read admin", "--expires-in-days", "7"]) == 0
    created = capsys.readouterr()
    key = created.out.strip()
    assert key.startswith("cr_") and "shown only now" in created.err
    assert main([*cli, "list", "--tenant", tenant]) == 0
    listed = capsys.readouterr().out
    [line] = listed.splitlines()
    key_id, name, last4, scopes, by, *_ = line.split("\t")
    assert (name, last4, scopes, by) == ("deploy", f"…{key[-4:]}", "runs:read admin", "ops")
    assert key not in listed

    seen = client.get(KEYS, headers=bearer(key))  # the API takes what the CLI issued
    assert seen.status_code == 200 and seen.json()["api_keys"][0]["id"] == key_id

    assert main([*cli, "revoke", "--tenant", tenant, key_id]) == 0
    deadline = time.monotonic() + CACHE_TTL_S + 5  # plus the read model's lag on a loaded machine
    while client.get(RUNS, headers=bearer(key)).status_code == 200:
        assert time.monotonic() < deadline, "a key revoked by the CLI still works"
        time.sleep(0.2)
    assert_problem(client.get(RUNS, headers=bearer(key)), 401)
    assert main([*cli, "revoke", "--tenant", tenant, key_id]) == 1
    assert main([*cli, "create", "--tenant", tenant, "--name", "x", "--scope", "root"]) == 1
    assert "not found" in capsys.readouterr().err
    assert key not in caplog.text
    assert_nowhere_stored(services, key)


def test_the_api_keys_read_model_is_hosted_and_rebuildable(services: Services) -> None:
    host = read_models(services)["api_keys"]
    assert host.rebuild is not None and host.rebuild.tables == ("api_keys",)
