"""Nothing a client sends is accepted and dropped: for every write route, a field we would
ignore is either refused by name (422, `errors[0].field`) or kept and returned as given.

A property over generated field names and values (hypothesis), against the real service.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from tests.conftest import job, wait_for_status

NAMES = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12)
VALUES = st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.none(),
                   st.text(alphabet=string.ascii_letters + string.digits + " .-", max_size=12),
                   st.lists(st.integers(0, 9), max_size=3))
KNOWN = {  # fields each body understands, never "extra"
    "submit": {"job_type", "code", "spec", "callbacks", "timeout_s", "max_retries", "labels",
               "created_by", "repo"},
    "spec": {"text", "description", "entrypoint", "job_name", "dry_run", "secrets", "inputs",
             "outputs", "executor", "network"},
    "event": {"event_type", "percent", "message", "timestamp", "data"},
    "data": {"percent", "message", "timestamp"},
    "continue": {"run_id", "status", "summary", "artifacts", "attempt", "reason", "exit_code"},
    "subscription": {"url", "events"},
    "api_key": {"name", "scopes", "expires_in_days"},
    "connection": {"dsn"},
    "lineage": {"eventTime", "producer", "eventType", "run", "job", "inputs", "outputs",
                "schemaURL", "dataset"},
}
PROPERTY = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
SLEEPER = "import time\ntime.sleep(120)\n"

Send = Callable[[TestClient[Any], dict[str, str], str, str, Any], Any]


def refused_by_name(resp: Any, field: str) -> None:
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["errors"][0]["field"] == field, resp.text


def submit_top(client: TestClient[Any], auth: dict[str, str], run: str, name: str, value: Any) -> None:
    body = {**job("print(1)"), name: value}
    refused_by_name(client.post("/api/v1/jobs/run", json=body, headers=auth), name)


def validate_top(client: TestClient[Any], auth: dict[str, str], run: str, name: str, value: Any) -> None:
    resp = client.post("/api/v1/jobs/validate", json={**job("print(1)"), name: value}, headers=auth)
    assert resp.status_code == 200 and resp.json()["valid"] is False, resp.text
    fields = [e["path"] for c in resp.json()["checks"] for e in c["errors"]]
    assert name in fields, resp.text


def event_flat(client: TestClient[Any], auth: dict[str, str], run: str, name: str, value: Any) -> None:
    body = {"event_type": "progress", "percent": 5, name: value}
    refused_by_name(client.post(f"/api/v1/runs/{run}/events", json=body, headers=auth), name)


def event_data(client: TestClient[Any], auth: dict[str, str], run: str, name: str, value: Any) -> None:
    body = {"event_type": "progress", "timestamp": "2024-12-21T00:00:00Z",
            "data": {"percent": 5, name: value}}
    refused_by_name(client.post(f"/api/v1/runs/{run}/events", json=body, headers=auth),
                    f"data.{name}")


def cancel(client: TestClient[Any], auth: dict[str, str], run: str, name: str, value: Any) -> None:
    resp = client.post(f"/api/v1/runs/{uuid.uuid4()}/cancel", json={name: value}, headers=auth)
    refused_by_name(resp, name)


def continue_report(client: TestClient[Any], auth: dict[str, str], run: str, name: str,
                    value: Any) -> None:
    body = {"run_id": run, "status": "running", name: value}
    refused_by_name(client.post("/api/v1/webhooks/continue", json=body, headers=auth), name)


def subscription(client: TestClient[Any], auth: dict[str, str], run: str, name: str,
                 value: Any) -> None:
    body = {"url": "https://hooks.example.com/x", "events": ["run.completed"], name: value}
    refused_by_name(client.post("/api/v1/webhooks/subscriptions", json=body, headers=auth), name)


def secret(client: TestClient[Any], auth: dict[str, str], run: str, name: str, value: Any) -> None:
    refused_by_name(client.post("/api/v1/webhooks/secret", json={name: value}, headers=auth), name)


def api_key(client: TestClient[Any], auth: dict[str, str], run: str, name: str, value: Any) -> None:
    body = {"name": "ci", name: value}
    refused_by_name(client.post("/api/v1/api-keys", json=body, headers=auth), name)


def connection(client: TestClient[Any], auth: dict[str, str], run: str, name: str, value: Any) -> None:
    body = {"dsn": "postgresql://u:p@db.example.com/app", name: value}
    refused_by_name(client.put("/api/v1/connections/warehouse", json=body, headers=auth), name)


def lineage(client: TestClient[Any], auth: dict[str, str], run: str, name: str, value: Any) -> None:
    body = {"eventTime": "2024-12-21T00:00:00Z", "eventType": "COMPLETE",
            "run": {"runId": str(uuid.uuid4())}, "job": {"namespace": "n", "name": "j"},
            "inputs": [], "outputs": [], name: value}
    refused_by_name(client.post("/api/v1/lineage", json=body, headers=auth), name)


CASES: dict[str, tuple[str, Send]] = {
    "submit": ("submit", submit_top), "validate": ("submit", validate_top),
    "event": ("event", event_flat), "event data": ("data", event_data),
    "cancel": ("event", cancel), "continue": ("continue", continue_report),
    "subscription": ("subscription", subscription), "secret": ("event", secret),
    "api key": ("api_key", api_key), "connection": ("connection", connection),
    "lineage": ("lineage", lineage),
}


@pytest.fixture
def running(client: TestClient[Any], auth: dict[str, str]) -> Any:
    run_id = client.post("/api/v1/jobs/run", json=job(SLEEPER), headers=auth).json()["run_id"]
    wait_for_status(client, run_id, auth, statuses={"running"})
    yield run_id
    client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth)


@pytest.mark.parametrize("case", list(CASES))
def test_an_extra_field_is_refused_by_name(client: TestClient[Any], auth: dict[str, str],
                                           running: str, case: str) -> None:
    known, send = CASES[case]

    @PROPERTY
    @given(name=NAMES.filter(lambda n: n not in KNOWN[known]), value=VALUES)
    def check(name: str, value: Any) -> None:
        send(client, auth, running, name, value)

    check()


@PROPERTY
@given(name=NAMES.filter(lambda n: n not in KNOWN["spec"]), value=VALUES)
def test_an_extra_spec_key_is_kept_and_returned_as_given(
        client: TestClient[Any], auth: dict[str, str], name: str, value: Any) -> None:
    body = job("print(1)", spec={"text": "keep what I send", name: value})
    resp = client.post("/api/v1/jobs/run", json=body, headers=auth)
    assert resp.status_code == 202, resp.text
    assert resp.json()["spec"][name] == value
    run = client.get(f"/api/v1/runs/{resp.json()['run_id']}", headers=auth).json()
    assert run["spec"][name] == value


@PROPERTY
@given(facet=NAMES, value=VALUES)
def test_openlineage_facets_are_named_as_not_kept(
        client: TestClient[Any], auth: dict[str, str], facet: str, value: Any) -> None:
    body = {"eventTime": "2024-12-21T00:00:00Z", "eventType": "COMPLETE",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json",
            "run": {"runId": str(uuid.uuid4()), "facets": {facet: {"v": value}}},
            "job": {"namespace": "n", "name": "facets"},
            "inputs": [{"namespace": "pg", "name": "raw.a", "facets": {facet: value}}],
            "outputs": [{"namespace": "pg", "name": "gold.a"}]}
    resp = client.post("/api/v1/lineage", json=body, headers=auth)
    assert resp.status_code == 201, resp.text
    assert resp.json()["not_kept"] == ["schemaURL", "run.facets", "inputs[0].facets"]
