"""PRD FR-4, sent as the PRD writes it: `{event_type, timestamp, data}` on POST /runs/{id}/events.

Every value sent comes back: in the run (progress, artifacts), its events (the client's
`timestamp` beside the server's `at`), its log and its artifact's metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.conftest import job, read_back, wait_for_status, wait_until

SLEEPER = "import time\ntime.sleep(120)\n"
SENT_AT = "2024-12-21T00:00:00Z"
URL = "https://storage.example.com/bucket/runs/result.csv"
DIGEST = "ab" * 32


@pytest.fixture
def running(client: TestClient[Any], auth: dict[str, str]) -> Iterator[str]:
    run_id = client.post("/api/v1/jobs/run", json=job(SLEEPER), headers=auth).json()["run_id"]
    wait_for_status(client, run_id, auth, statuses={"running"})
    wait_until(lambda: client.get(f"/api/v1/runs/{run_id}", headers=auth).json()["artifacts"],
               what="the run's code archived (the worker's own write)")
    yield run_id
    client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth)


def post(client: TestClient[Any], auth: dict[str, str], run_id: str, body: Any) -> Any:
    return client.post(f"/api/v1/runs/{run_id}/events", json=body, headers=auth)


def events(client: TestClient[Any], auth: dict[str, str], run_id: str, kind: str,
           count: int = 1) -> list[Any]:
    """The run's `kind` events, once `count` of them are there (the events view catches up)."""
    def found() -> list[Any]:
        page = client.get(f"/api/v1/runs/{run_id}/events", headers=auth).json()
        kept = [e for e in page["events"] if e["event"] == kind]
        return kept if len(kept) >= count else []
    return list(wait_until(found, what=f"{count} {kind} event(s)"))


def same_instant(a: str, b: str) -> bool:
    return datetime.fromisoformat(a) == datetime.fromisoformat(b)


def test_a_progress_envelope_keeps_its_data_and_the_clients_time(
        client: TestClient[Any], auth: dict[str, str], running: str) -> None:
    body = {"event_type": "progress", "timestamp": SENT_AT,
            "data": {"percent": 40, "message": "loading rows"}}
    r = post(client, auth, running, body)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1
    read_back(client, auth, running, r)
    run = client.get(f"/api/v1/runs/{running}", headers=auth).json()
    assert run["progress"]["percent"] == 40 and run["progress"]["message"] == "loading rows"
    [event] = events(client, auth, running, "progress")
    assert event["data"]["percent"] == 40 and event["data"]["message"] == "loading rows"
    assert same_instant(event["data"]["timestamp"], SENT_AT)
    assert not same_instant(event["at"], SENT_AT)  # the server's own time, kept too


def test_a_log_envelope_reaches_the_log_and_its_events(
        client: TestClient[Any], auth: dict[str, str], running: str) -> None:
    body = {"event_type": "log", "timestamp": SENT_AT,
            "data": {"text": "read 1000 rows", "stream": "stderr"}}
    r = post(client, auth, running, body)
    assert r.status_code == 202, r.text
    read_back(client, auth, running, r)
    logs = client.get(f"/api/v1/runs/{running}/logs", params={"stream": "stderr"}, headers=auth)
    assert "read 1000 rows" in logs.text
    [event] = [e for e in events(client, auth, running, "log") if e["data"]["stream"] == "stderr"]
    assert event["data"]["text"] == "read 1000 rows"
    assert same_instant(event["data"]["timestamp"], SENT_AT)


def test_an_artifact_envelope_registers_an_external_artifact(
        client: TestClient[Any], auth: dict[str, str], running: str) -> None:
    body = {"event_type": "artifact", "timestamp": SENT_AT,
            "data": {"path": "output/result.csv", "url": URL, "content_type": "text/csv",
                     "size": 1234, "sha256": DIGEST}}
    r = post(client, auth, running, body)
    assert r.status_code == 202, r.text
    read_back(client, auth, running, r)
    run = client.get(f"/api/v1/runs/{running}", headers=auth).json()
    [shown] = [a for a in run["artifacts"] if a["path"] == "output/result.csv"]
    assert shown["url"] == URL and shown["external"] is True
    assert (shown["size"], shown["sha256"], shown["content_type"]) == (1234, DIGEST, "text/csv")
    meta = client.get(f"/api/v1/artifacts/{shown['artifact_id']}", headers=auth).json()
    assert meta["url"] == URL and meta["run_id"] == running and meta["external"] is True
    content = client.get(f"/api/v1/artifacts/{shown['artifact_id']}/content", headers=auth,
                         follow_redirects=False)
    assert content.status_code == 307 and content.headers["location"] == URL
    [event] = [e for e in events(client, auth, running, "artifact", 2)
               if e["data"]["path"] == "output/result.csv"]  # beside the archived code
    assert event["data"]["url"] == URL and same_instant(event["data"]["timestamp"], SENT_AT)


def test_an_artifact_kept_in_an_object_store_says_where_its_bytes_are(
        client: TestClient[Any], auth: dict[str, str], running: str) -> None:
    body = {"event_type": "artifact", "data": {"path": "model.bin", "url": "s3://models/m.bin"}}
    r = post(client, auth, running, body)
    assert r.status_code == 202, r.text
    read_back(client, auth, running, r)
    run = client.get(f"/api/v1/runs/{running}", headers=auth).json()
    [shown] = [a for a in run["artifacts"] if a["path"] == "model.bin"]
    assert shown["size"] is None and shown["sha256"] is None  # not said, not invented
    r = client.get(f"/api/v1/artifacts/{shown['artifact_id']}/content", headers=auth)
    assert r.status_code == 409 and "s3://models/m.bin" in r.json()["detail"]


def test_flat_and_enveloped_events_mix_in_one_list(
        client: TestClient[Any], auth: dict[str, str], running: str) -> None:
    body = [{"event_type": "progress", "percent": 10, "message": "flat"},
            {"event_type": "lineage", "timestamp": SENT_AT,
             "data": {"source": "raw.orders", "target": "gold.orders"}},
            {"event_type": "progress", "data": {"percent": 20, "message": "enveloped"}}]
    r = post(client, auth, running, body)
    assert r.status_code == 202 and r.json()["accepted"] == 3
    assert [e["data"]["message"] for e in events(client, auth, running, "progress", 2)] == [
        "flat", "enveloped"]
    [edge] = events(client, auth, running, "lineage")
    assert edge["data"]["source"] == "raw.orders" and same_instant(edge["data"]["timestamp"], SENT_AT)


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"event_type": "progress", "data": {"percent": 40, "rows": 1000}}, "data.rows", "unknown"),
    ({"event_type": "progress", "percent": 40, "eta_s": 3}, "eta_s", "unknown"),
    ({"event_type": "progress", "data": {"percent": 4}, "source": "x"}, "source", "unknown"),
    ({"event_type": "metric", "data": {"value": 1}}, "event_type",
     "progress, log, artifact, lineage"),
    ([{"event_type": "log", "text": "ok"}, {"event_type": "artifact", "data": {"path": "a"}}],
     "[1].data.url", "missing"),
    ({"event_type": "artifact", "data": {"path": "a.txt", "url": "javascript:alert(1)"}},
     "data.url", "scheme"),
    ({"event_type": "artifact", "data": {"path": "logs/run.log", "url": URL}}, "data.path",
     "reserved"),
])
def test_a_field_we_dont_understand_is_refused_by_name_and_nothing_is_recorded(
        client: TestClient[Any], auth: dict[str, str], running: str, body: Any, field: str,
        words: str) -> None:
    before = client.get(f"/api/v1/runs/{running}", headers=auth).json()
    r = post(client, auth, running, body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    error = r.json()["errors"][0]
    assert error["field"] == field and words in error["message"].lower() + r.json()["detail"]
    assert client.get(f"/api/v1/runs/{running}", headers=auth).json() == before
