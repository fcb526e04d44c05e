"""Hostile and broken requests get a clear 4xx problem document and change nothing.

Every test here talks to the real service through the session `client`. A rejected
request must answer `application/problem+json` with a `status`, a `detail` and, for
validation errors, an `errors` list naming the offending field; and it must leave the
event store and the caller's runs exactly as they were.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jwt
import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from psycopg import sql

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services
from tests.conftest import job, wait_for_status, wait_until

SUBMIT = "/api/v1/jobs/run"
RUNS = "/api/v1/runs"
PROBLEM_JSON = "application/problem+json"
SLEEPER = "import time\ntime.sleep(3000)\n"
"""A job that stays running (silently) until it is cancelled."""


# -- helpers ----------------------------------------------------------------------------


class EventStore:
    """Counts what the write side has recorded, straight from the event-store table."""

    def __init__(self, conn: psycopg.Connection[Any], table: str) -> None:
        self.conn = conn
        self.table = sql.Identifier(table)

    def _count(self, where: sql.Composable, *args: Any) -> int:
        query = sql.SQL("SELECT count(*) FROM {} WHERE ").format(self.table) + where
        row = self.conn.execute(query, args).fetchone()
        assert row is not None
        return int(row[0])

    def runs(self) -> int:
        """How many runs exist, across every tenant (each run's stream starts at version 1)."""
        return self._count(sql.SQL("originator_version = 1"))

    def events_of(self, run_id: str) -> int:
        """How many events one run has recorded."""
        return self._count(sql.SQL("originator_id = %s"), uuid.UUID(run_id))


@pytest.fixture(scope="module")
def store(services: Services) -> Iterator[EventStore]:
    """The event store of the session's service (one connection for the whole module)."""
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        yield EventStore(conn, services.commands.app.recorder.events_table_name)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def list_runs(client: TestClient[Any], headers: dict[str, str]) -> list[dict[str, Any]]:
    resp = client.get(RUNS, params={"limit": 200}, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["runs"]


def assert_problem(resp: Any, status: int, *, field: str | None = None) -> dict[str, Any]:
    """The response is a problem document with this status (and names `field`, if given)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON
    body = resp.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"].strip()
    if field is not None:
        fields = [e["field"] for e in body.get("errors") or []]
        assert field in fields, f"expected errors[].field {field!r}, got {fields}: {body}"
    return body


@contextmanager
def nothing_changes(
    client: TestClient[Any], headers: dict[str, str], store: EventStore
) -> Iterator[None]:
    """The tenant's runs and the number of runs in the store are the same afterwards."""
    runs, count = list_runs(client, headers), store.runs()
    yield
    assert store.runs() == count, "a rejected request created a run"
    assert list_runs(client, headers) == runs, "a rejected request changed the tenant's runs"


@contextmanager
def sleeping_run(client: TestClient[Any], headers: dict[str, str]) -> Iterator[str]:
    """A running job of the tenant, cancelled (and seen cancelled) afterwards."""
    resp = client.post(SUBMIT, json=job(SLEEPER), headers=headers)
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    try:
        wait_for_status(client, run_id, headers, statuses={"running"})
        # The worker archives the code just after the start: wait, so the run holds still.
        wait_until(lambda: client.get(f"{RUNS}/{run_id}", headers=headers).json()["artifacts"],
                   what="the run's code to be archived")
        yield run_id
    finally:
        client.post(f"{RUNS}/{run_id}/cancel", headers=headers)
        wait_for_status(client, run_id, headers, statuses={"cancelled"})


@dataclass(frozen=True)
class Victim:
    """A tenant with a run that stays running for the whole module: the target of attacks."""

    tenant: str
    headers: dict[str, str]
    run_id: str

    @property
    def url(self) -> str:
        return f"{RUNS}/{self.run_id}"


@pytest.fixture(scope="module")
def victim(client: TestClient[Any], services: Services) -> Iterator[Victim]:
    tenant = f"victim-{uuid.uuid4().hex[:8]}"
    headers = bearer(issue_token(services.jwt_secret, tenant=tenant, sub="victim", scopes=ALL_SCOPES,
                                 ttl_s=3600))
    with sleeping_run(client, headers) as run_id:
        yield Victim(tenant, headers, run_id)


@contextmanager
def victim_untouched(client: TestClient[Any], victim: Victim, store: EventStore) -> Iterator[None]:
    """No run is created anywhere, and the victim's run and its events stay exactly as they were."""
    before, events = client.get(victim.url, headers=victim.headers).json(), store.events_of(victim.run_id)
    with nothing_changes(client, victim.headers, store):
        yield
    after = client.get(victim.url, headers=victim.headers).json()
    assert after == before
    assert after["status"] == "running" and after["cancel_requested"] is False
    assert store.events_of(victim.run_id) == events


def valid_submission() -> dict[str, Any]:
    """A submission using every optional field, accepted as is."""
    return {
        "job_type": "spark_etl",
        "code": {
            "files": [{"path": "main.py", "content": "print('ok')"},
                      {"path": "lib/util.py", "content": "X = 1"}],
            "repo": "git@example.com:acme/jobs.git",
            "ref": "main",
        },
        "spec": {
            "description": "adversarial test job",
            "entrypoint": "main.py",
            "job_name": "adversarial",
            "dry_run": False,
            "secrets": {"API_TOKEN": "s3cr3t-value"},
            "inputs": ["raw.events"],
            "outputs": ["clean.events"],
        },
        "timeout_s": 60,
        "max_retries": 1,
        "labels": {"team": "data"},
    }


# -- authentication: 401 with WWW-Authenticate ----------------------------------------


def _claims(tenant: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "mallory", "tenant_id": tenant, "scope": " ".join(ALL_SCOPES),
        "iat": now, "exp": now + 600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _bad_authorizations(secret: str, tenant: str) -> dict[str, dict[str, str]]:
    unsigned_header = _b64({"alg": "none", "typ": "JWT"})
    good = issue_token(secret, tenant=tenant, sub="a", scopes=ALL_SCOPES, ttl_s=600)
    return {
        "missing header": {},
        "basic scheme": {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
        "token scheme": {"Authorization": f"Token {good}"},
        "bare token, no scheme": {"Authorization": good},
        "bearer without token": {"Authorization": "Bearer "},
        "garbage token": bearer("not-a-jwt"),
        "garbage three parts": bearer("aaa.bbb.ccc"),
        "expired": bearer(issue_token(secret, tenant=tenant, sub="a", scopes=ALL_SCOPES, ttl_s=-60)),
        "wrong key": bearer(issue_token("not-the-secret-" + "k" * 48, tenant=tenant, sub="a",
                                        scopes=ALL_SCOPES, ttl_s=600)),
        "alg none (pyjwt)": bearer(jwt.encode(_claims(tenant), None, algorithm="none")),
        "alg none (by hand)": bearer(f"{unsigned_header}.{_b64(_claims(tenant))}."),
        "HS512 with the right secret": bearer(jwt.encode(_claims(tenant), secret, algorithm="HS512")),
        "missing exp": bearer(jwt.encode(_claims(tenant, exp=None), secret, algorithm="HS256")),
        "missing tenant_id": bearer(jwt.encode(_claims(tenant, tenant_id=None), secret, algorithm="HS256")),
        "empty tenant_id": bearer(jwt.encode(_claims(tenant, tenant_id=""), secret, algorithm="HS256")),
        "missing sub": bearer(jwt.encode(_claims(tenant, sub=None), secret, algorithm="HS256")),
        **{name: bearer(jwt.encode(_claims(tenant, **claims), secret, algorithm="HS256"))
           for name, claims in _bad_claims().items()},
    }


def _bad_claims() -> dict[str, dict[str, Any]]:
    """Claims a signed token must not get past: times that aren't numbers, blank names, no end."""
    now = int(time.time())
    return {
        "exp as a string": {"exp": str(now + 600)},
        "exp in year 9999": {"exp": 253402300799},
        "exp as a boolean": {"exp": True},
        "iat as a string": {"iat": str(now)},
        "nbf as a string": {"nbf": str(now - 10)},
        "whitespace-only tenant_id": {"tenant_id": " \t "},
        "whitespace-only sub": {"sub": "   "},
        "lifetime over the maximum": {"iat": now - 60, "exp": now + 24 * 3600},
        "over the maximum without iat": {"iat": None, "exp": now + 25 * 3600},
    }


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


BAD_AUTHORIZATIONS = [
    "missing header", "basic scheme", "token scheme", "bare token, no scheme", "bearer without token",
    "garbage token", "garbage three parts", "expired", "wrong key", "alg none (pyjwt)",
    "alg none (by hand)", "HS512 with the right secret", "missing exp", "missing tenant_id",
    "empty tenant_id", "missing sub", "exp as a string", "exp in year 9999", "exp as a boolean",
    "iat as a string", "nbf as a string", "whitespace-only tenant_id", "whitespace-only sub",
    "lifetime over the maximum", "over the maximum without iat",
]


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512, session's key
@pytest.mark.parametrize("name", BAD_AUTHORIZATIONS)
def test_an_unauthenticated_request_is_a_401_problem_with_www_authenticate_and_changes_nothing(
    client: TestClient[Any], services: Services, victim: Victim, store: EventStore, name: str
) -> None:
    headers = _bad_authorizations(services.jwt_secret, victim.tenant)[name]
    requests: list[tuple[str, str, Any]] = [
        ("POST", SUBMIT, job("print('should never run')")),
        ("GET", RUNS, None),
        ("GET", victim.url, None),
        ("GET", f"{victim.url}/logs", None),
        ("POST", f"{victim.url}/events", {"event_type": "progress", "percent": 99}),
        ("POST", f"{victim.url}/cancel", None),
    ]
    with victim_untouched(client, victim, store):
        for method, url, body in requests:
            resp = client.request(method, url, json=body, headers=headers)
            problem = assert_problem(resp, 401)
            assert resp.headers.get("www-authenticate", "").startswith("Bearer"), url
            assert re.search(r"token|authorization", problem["detail"], re.I), problem
            assert "print" not in resp.text and "sleep" not in resp.text


def test_an_expired_token_says_it_expired(
    client: TestClient[Any], token: Callable[..., str], tenant: str
) -> None:
    resp = client.get(RUNS, headers=bearer(token(tenant, ttl=-60)))
    assert "expired" in assert_problem(resp, 401)["detail"]


def test_health_needs_no_token(client: TestClient[Any]) -> None:
    assert client.get("/healthz").status_code == 200


# -- authorization: 403 for a missing scope -------------------------------------------


def test_a_token_without_jobs_write_cannot_submit_and_nothing_is_created(
    client: TestClient[Any], token: Callable[..., str], tenant: str, auth: dict[str, str],
    store: EventStore,
) -> None:
    read_only = bearer(token(tenant, scopes=["runs:read"]))
    with nothing_changes(client, auth, store):
        resp = client.post(SUBMIT, json=job("print('nope')"), headers=read_only)
        assert "jobs:write" in assert_problem(resp, 403)["detail"]


def test_a_token_with_only_jobs_write_cannot_read_list_report_on_or_cancel_a_run(
    client: TestClient[Any], services: Services, victim: Victim, store: EventStore,
) -> None:
    write_only = bearer(issue_token(services.jwt_secret, tenant=victim.tenant, sub="ci",
                                    scopes=["jobs:write"], ttl_s=600))
    with victim_untouched(client, victim, store):
        for url in (victim.url, f"{victim.url}/logs", RUNS):
            assert "runs:read" in assert_problem(client.get(url, headers=write_only), 403)["detail"]
        resp = client.post(f"{victim.url}/events", json={"event_type": "progress", "percent": 5},
                           headers=write_only)
        assert "runs:write" in assert_problem(resp, 403)["detail"]
        resp = client.post(f"{victim.url}/cancel", headers=write_only)
        assert "runs:write" in assert_problem(resp, 403)["detail"]


def test_a_token_with_no_scopes_at_all_is_forbidden_everywhere(
    client: TestClient[Any], token: Callable[..., str], tenant: str, auth: dict[str, str],
    store: EventStore,
) -> None:
    nobody = bearer(token(tenant, scopes=[]))
    with nothing_changes(client, auth, store):
        assert_problem(client.post(SUBMIT, json=job("print(1)"), headers=nobody), 403)
        assert_problem(client.get(RUNS, headers=nobody), 403)


# -- tenancy: another tenant's run does not exist ----------------------------------------


def test_another_tenants_run_is_a_404_everywhere_and_their_cancel_does_nothing(
    client: TestClient[Any], auth: dict[str, str], victim: Victim, store: EventStore,
) -> None:
    # `auth` is another tenant with every scope, admin included: still nothing to see.
    with victim_untouched(client, victim, store), nothing_changes(client, auth, store):
        for resp in (
            client.get(victim.url, headers=auth),
            client.get(f"{victim.url}/logs", headers=auth),
            client.post(f"{victim.url}/events", headers=auth,
                        json={"event_type": "log", "text": "injected by another tenant"}),
            client.post(f"{victim.url}/events", headers=auth,
                        json=[{"event_type": "progress", "percent": 100, "message": "pwned"}]),
            client.post(f"{victim.url}/cancel", headers=auth),
        ):
            problem = assert_problem(resp, 404)
            assert victim.run_id in problem["detail"]
            assert "sleep" not in resp.text and victim.tenant not in resp.text
        for params in ({}, {"status": "running"}, {"created_by": "victim"}, {"job_type": "spark_etl"}):
            page = client.get(RUNS, params=params, headers=auth)
            assert page.status_code == 200
            assert page.json()["runs"] == []
    assert "injected" not in client.get(f"{victim.url}/logs", headers=victim.headers).text


# -- unknown and malformed run ids --------------------------------------------------------


def test_an_unknown_run_id_is_a_404_on_every_run_route(
    client: TestClient[Any], auth: dict[str, str], store: EventStore
) -> None:
    run_id = str(uuid.uuid4())
    with nothing_changes(client, auth, store):
        for resp in (
            client.get(f"{RUNS}/{run_id}", headers=auth),
            client.get(f"{RUNS}/{run_id}/logs", headers=auth),
            client.post(f"{RUNS}/{run_id}/events", json={"event_type": "progress", "percent": 1},
                        headers=auth),
            client.post(f"{RUNS}/{run_id}/cancel", headers=auth),
        ):
            assert run_id in assert_problem(resp, 404)["detail"]


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "0" * 33, "..", "%2e%2e%2fetc"])
def test_a_run_id_that_is_not_a_uuid_is_a_404(
    client: TestClient[Any], auth: dict[str, str], store: EventStore, bad_id: str
) -> None:
    with nothing_changes(client, auth, store):
        for method, suffix, body in (
            ("GET", "", None), ("GET", "/logs", None), ("POST", "/cancel", None),
            ("POST", "/events", {"event_type": "progress", "percent": 1}),
        ):
            resp = client.request(method, f"{RUNS}/{bad_id}{suffix}", json=body, headers=auth)
            if bad_id == ".." and suffix == "/events":
                # the client normalises runs/../events to the tenant feed, which is GET-only
                assert_problem(resp, 405)
                continue
            assert_problem(resp, 404)


# -- malformed bodies: 400 --------------------------------------------------------------


MALFORMED = {
    "truncated": b'{"job_type": "spark_etl", "code": {"files": [',
    "not json": b"job_type=spark_etl",
    "empty": b"",
    "whitespace only": b"   \n",
    "array instead of object": b'[{"job_type": "spark_etl"}]',
    "string instead of object": b'"spark_etl"',
    "number instead of object": b"42",
    "null": b"null",
    "trailing garbage": b'{"job_type": "spark_etl"} extra',
    "invalid utf-8": b'{"job_type": "\xff\xfe"}',
    "lone surrogate": b'{"job_type": "spark_etl", "spec": {"description": "\\ud800"}}',
    "nested beyond the decoder": b'{"spec": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
    "nested beyond the store": (b'{"job_type": "spark_etl", "code": {"files": [{"path": "a.py", '
                                b'"content": ""}]}, "spec": {"x": ' + b"[" * 990 + b"]" * 990 + b"}}"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_submission_is_a_400_and_creates_nothing(
    client: TestClient[Any], auth: dict[str, str], store: EventStore, name: str
) -> None:
    with nothing_changes(client, auth, store):
        resp = client.post(SUBMIT, content=MALFORMED[name],
                           headers={**auth, "Content-Type": "application/json"})
        assert_problem(resp, 400)


MALFORMED_EVENTS = {
    "truncated": b'{"event_type": "progress", "perc',
    "not json": b"progress=5",
    "empty": b"",
    "number": b"42",
    "null": b"null",
    "string": b'"progress"',
    "invalid utf-8": b'{"event_type": "log", "text": "\xff"}',
    "trailing garbage": b'{"event_type": "progress"} trailing',
}


@pytest.mark.parametrize("name", list(MALFORMED_EVENTS))
def test_a_malformed_event_is_a_400_and_records_nothing(
    client: TestClient[Any], victim: Victim, store: EventStore, name: str
) -> None:
    with victim_untouched(client, victim, store):
        resp = client.post(f"{victim.url}/events", content=MALFORMED_EVENTS[name],
                           headers={**victim.headers, "Content-Type": "application/json"})
        assert_problem(resp, 400)


# -- invalid submissions: 422 naming the field ---------------------------------------------


def _without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def _files(*paths: str) -> dict[str, Any]:
    return {"files": [{"path": p, "content": "print(1)"} for p in paths]}


INVALID_SUBMISSIONS: dict[str, tuple[dict[str, Any], str]] = {
    "unknown job_type": (job("print(1)", job_type="rm_rf"), "job_type"),
    "job_type not a string": (job("print(1)", job_type=7), "job_type"),  # type: ignore[arg-type]
    "missing job_type": (_without(job("print(1)"), "job_type"), "job_type"),
    "missing code": (_without(job("print(1)"), "code"), "code"),
    "code without files": (job("print(1)", code={}), "code.files"),
    "code with no files": (job("print(1)", code={"files": []}), "code.files"),
    "file without content": (job("print(1)", code={"files": [{"path": "main.py"}]}),
                             "code.files[0].content"),
    "file with unknown key": (job("print(1)", code={"files": [{"path": "a.py", "content": "",
                                                             "mode": "0777"}]}),
                              "code.files[0].mode"),
    "timeout_s as a string": (job("print(1)", timeout_s="60"), "timeout_s"),
    "timeout_s zero": (job("print(1)", timeout_s=0), "timeout_s"),
    "timeout_s negative": (job("print(1)", timeout_s=-5), "timeout_s"),
    "timeout_s over a week": (job("print(1)", timeout_s=10**9), "timeout_s"),
    "timeout_s huge": (job("print(1)", timeout_s=10**40), "timeout_s"),
    "timeout_s a float": (job("print(1)", timeout_s=1.5), "timeout_s"),
    "negative max_retries": (job("print(1)", max_retries=-1), "max_retries"),
    "too many max_retries": (job("print(1)", max_retries=1000), "max_retries"),
    "labels not strings": (job("print(1)", labels={"team": 1}), "labels[...]"),
    "spec not an object": (job("print(1)", spec="do it"), "spec"),
    "dry_run not a bool": (job("print(1)", spec={"dry_run": "yes"}), "spec.dry_run"),
    "parent traversal": (job("", code=_files("../x.py")), "code.files[0].path"),
    "nested traversal": (job("", code=_files("a/../../x.py")), "code.files[0].path"),
    "absolute path": (job("", code=_files("/etc/passwd")), "code.files[0].path"),
    "backslash path": (job("", code=_files("..\\x.py")), "code.files[0].path"),
    "dot path": (job("", code=_files("a/..")), "code.files[0].path"),
    "empty path": (job("", code=_files("")), "code.files[0].path"),
    "second file traverses": (job("", code=_files("main.py", "../../x.py")), "code.files[1].path"),
    "duplicate paths": (job("", code=_files("main.py", "main.py")), "code.files[1].path"),
    "duplicate after normalising": (job("", code=_files("main.py", "./main.py")), "code.files[1].path"),
    "entrypoint not among files": (job("print(1)", spec={"entrypoint": "other.py"}), "spec.entrypoint"),
    "bad secret name": (job("print(1)", spec={"secrets": {"1-BAD NAME": "x"}}), "spec.secrets"),
    "secret value not a string": (job("print(1)", spec={"secrets": {"TOKEN": 5}}), "spec.secrets[...]"),
    "unknown callback": (job("print(1)", callbacks={"on_whatever": "https://example.com"}),
                         "callbacks.on_whatever"),
    "file inside another file": (job("", code=_files("lib", "lib/util.py")), "code.files[1].path"),
    "NUL in the description": (job("print(1)", spec={"description": "a\x00b"}), "spec.description"),
    "NUL in a label": (job("print(1)", labels={"team": "data\x00"}), "labels.team"),
    "NUL in a label key": (job("print(1)", labels={"te\x00am": "data"}), "labels"),
    "NUL in job_name": (job("print(1)", spec={"job_name": "x\x00"}), "spec.job_name"),
    "NUL in an extra spec value": (job("print(1)", spec={"extra": [{"k": "\x00"}]}), "spec.extra[0].k"),
    "NUL in a path": (job("", code=_files("ma\x00in.py")), "code.files[0].path"),
    "NUL in a secret value": (job("print(1)", spec={"secrets": {"TOKEN": "a\x00b"}}), "spec.secrets.TOKEN"),
}


@pytest.mark.parametrize("name", list(INVALID_SUBMISSIONS))
def test_an_invalid_submission_is_a_422_naming_the_field_and_creates_nothing(
    client: TestClient[Any], auth: dict[str, str], store: EventStore, name: str
) -> None:
    body, field = INVALID_SUBMISSIONS[name]
    with nothing_changes(client, auth, store):
        problem = assert_problem(client.post(SUBMIT, json=body, headers=auth), 422, field=field)
    assert field in problem["detail"]
    assert "s3cr3t" not in json.dumps(problem)


def test_a_refused_nul_character_leaves_the_read_model_keeping_up(
    client: TestClient[Any], auth: dict[str, str], store: EventStore
) -> None:
    # Postgres text/jsonb can't hold U+0000: accepted, it would wedge the run_status projection.
    with nothing_changes(client, auth, store):
        resp = client.post(SUBMIT, json=job("print(1)", spec={"description": "\x00"}), headers=auth)
        assert_problem(resp, 422, field="spec.description")
    ok = client.post(SUBMIT, json=job("print('still fine')"), headers=auth)
    assert ok.status_code == 202, ok.text
    assert client.get(f"{RUNS}/{ok.json()['run_id']}", headers=auth).status_code == 200
    assert wait_for_status(client, ok.json()["run_id"], auth)["status"] == "completed"


@pytest.mark.parametrize("path", ["output", "x" * 300 + ".py"])
def test_code_the_worker_cannot_lay_out_on_disk_fails_the_run_instead_of_hanging(
    client: TestClient[Any], auth: dict[str, str], path: str
) -> None:
    files = [{"path": "main.py", "content": "print(1)"}, {"path": path, "content": "x = 1"}]
    resp = client.post(SUBMIT, json=job("", code={"files": files}), headers=auth)
    assert resp.status_code == 202, resp.text
    run = wait_for_status(client, resp.json()["run_id"], auth)
    assert run["status"] == "failed"
    assert run["error"]["reason"] == "launch_failed"


def test_a_secret_value_is_never_echoed_in_a_validation_error(
    client: TestClient[Any], auth: dict[str, str], store: EventStore
) -> None:
    body = job("print(1)", spec={"secrets": {"TOKEN": "hunter2-very-secret"}}, timeout_s="x")
    with nothing_changes(client, auth, store):
        resp = client.post(SUBMIT, json=body, headers=auth)
        assert_problem(resp, 422, field="timeout_s")
    assert "hunter2" not in resp.text


def test_an_oversized_idempotency_key_is_a_422_and_creates_nothing(
    client: TestClient[Any], auth: dict[str, str], store: EventStore
) -> None:
    with nothing_changes(client, auth, store):
        resp = client.post(SUBMIT, json=job("print(1)"), headers={**auth, "Idempotency-Key": "k" * 256})
        assert_problem(resp, 422, field="Idempotency-Key")


def test_the_valid_submission_used_as_a_base_is_accepted(
    client: TestClient[Any], auth: dict[str, str], store: EventStore
) -> None:
    count = store.runs()
    resp = client.post(SUBMIT, json=valid_submission(), headers=auth)
    assert resp.status_code == 202, resp.text
    assert store.runs() == count + 1
    assert "s3cr3t-value" not in resp.text
    wait_for_status(client, resp.json()["run_id"], auth)


# -- invalid events: 422 ------------------------------------------------------------------


INVALID_EVENTS: dict[str, tuple[Any, str]] = {
    "unknown event_type": ({"event_type": "delete_everything"}, "event_type"),
    "missing event_type": ({"percent": 10}, "event_type"),
    "percent 150": ({"event_type": "progress", "percent": 150}, "percent"),
    "negative percent": ({"event_type": "progress", "percent": -1}, "percent"),
    "percent as text": ({"event_type": "progress", "percent": "half"}, "percent"),
    "log without text": ({"event_type": "log"}, "text"),
    "log to an unknown stream": ({"event_type": "log", "text": "x", "stream": "stdin"}, "stream"),
    "bad event inside a batch": ([{"event_type": "progress", "percent": 1},
                                  {"event_type": "progress", "percent": 150}], "[1].percent"),
    "empty batch": ([], "body"),
    "a batch of batches": ([[{"event_type": "progress"}]], "[0]"),
    "NUL in log text": ({"event_type": "log", "text": "a\x00b"}, "text"),
    "NUL in a progress message": ([{"event_type": "progress", "message": "ok"},
                                   {"event_type": "progress", "message": "\x00"}], "[1].message"),
}


@pytest.mark.parametrize("name", list(INVALID_EVENTS))
def test_an_invalid_event_is_a_422_naming_the_field_and_records_nothing(
    client: TestClient[Any], victim: Victim, store: EventStore, name: str
) -> None:
    body, field = INVALID_EVENTS[name]
    with victim_untouched(client, victim, store):
        resp = client.post(f"{victim.url}/events", json=body, headers=victim.headers)
        assert_problem(resp, 422, field=field)


# -- body size: 413 -----------------------------------------------------------------------


def test_a_body_over_the_limit_is_a_413_problem_and_creates_nothing(
    client: TestClient[Any], auth: dict[str, str], store: EventStore
) -> None:
    body = json.dumps(job("x = '" + "a" * (11 * 1024 * 1024) + "'\n")).encode()
    assert len(body) > 11 * 1024 * 1024
    with nothing_changes(client, auth, store):
        resp = client.post(SUBMIT, content=body, headers={**auth, "Content-Type": "application/json"})
        assert_problem(resp, 413)


def test_an_event_batch_over_the_limit_is_a_413_and_records_nothing(
    client: TestClient[Any], victim: Victim, store: EventStore
) -> None:
    batch = [{"event_type": "log", "text": "a" * (1024 * 1024 - 1)}] * 11
    with victim_untouched(client, victim, store):
        resp = client.post(f"{victim.url}/events", content=json.dumps(batch).encode(),
                           headers={**victim.headers, "Content-Type": "application/json"})
        assert_problem(resp, 413)


# -- property tests: never a 5xx, and a 4xx never writes ------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children,
                                                                      max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside a JSON value."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
        value, list) else ()
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


def _json_type(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    return {int: "number", float: "number", str: "string", list: "array", dict: "object"}[type(value)]


@st.composite
def mutations(draw: st.DrawFn, base: Any) -> Any:
    """`base` with one key dropped, or one value replaced by a value of another JSON type
    (or, for a string, by any other string)."""
    value = copy.deepcopy(base)
    path = draw(st.sampled_from(_paths(value)))
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    old = parent[path[-1]]
    how = draw(st.sampled_from(["drop", "retype", "text"] if isinstance(old, str) else ["drop", "retype"]))
    if how == "drop":
        del parent[path[-1]]
    elif how == "retype":
        parent[path[-1]] = draw(json_values.filter(lambda v: _json_type(v) != _json_type(old)))
    else:
        parent[path[-1]] = draw(st.text(max_size=30))
    return value


VALID_EVENTS: list[Any] = [
    {"event_type": "progress", "percent": 42.5, "message": "crunching"},
    {"event_type": "log", "text": "a line\nanother", "stream": "stderr"},
    [{"event_type": "progress", "percent": 10}, {"event_type": "log", "text": "batched"}],
]

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _check_answer(resp: Any) -> None:
    event(f"HTTP {resp.status_code}")  # shown by --hypothesis-show-statistics
    assert resp.status_code < 500, resp.text
    if resp.status_code != 202:
        assert 400 <= resp.status_code < 500, resp.text
        assert_problem(resp, resp.status_code)


@PROPERTY_SETTINGS
@given(body=st.one_of(json_values, mutations(valid_submission())))
def test_any_json_posted_as_a_submission_is_accepted_or_a_4xx_that_creates_nothing(
    client: TestClient[Any], auth: dict[str, str], store: EventStore, body: Any
) -> None:
    count = store.runs()
    resp = client.post(SUBMIT, content=json.dumps(body).encode(),
                       headers={**auth, "Content-Type": "application/json"})
    _check_answer(resp)
    assert store.runs() == count + (1 if resp.status_code == 202 else 0)
    if resp.status_code == 202:
        assert resp.json()["run_id"]
        assert "s3cr3t-value" not in resp.text


@pytest.fixture
def running_run(client: TestClient[Any], auth: dict[str, str]) -> Iterator[str]:
    """A run of this test's tenant that keeps running during the test."""
    with sleeping_run(client, auth) as run_id:
        yield run_id


@PROPERTY_SETTINGS
@given(body=st.one_of(json_values, *(mutations(e) for e in VALID_EVENTS)))
def test_any_json_posted_as_events_is_accepted_or_a_4xx_that_records_nothing(
    client: TestClient[Any], auth: dict[str, str], store: EventStore, running_run: str, body: Any
) -> None:
    events = store.events_of(running_run)
    resp = client.post(f"{RUNS}/{running_run}/events", content=json.dumps(body).encode(),
                       headers={**auth, "Content-Type": "application/json"})
    _check_answer(resp)
    if resp.status_code == 202:
        assert resp.json()["run_id"] == running_run
    else:
        assert store.events_of(running_run) == events
