"""Reported events carry the reporter's own time (`reported_at`); events stored before that
field existed still load (events are forever), and external artifacts are well-formed."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from controlroom.commands.application import ControlRoom
from controlroom.domain.artifacts.external import (
    external_artifact,
    path_from_url,
    path_problem,
    url_problem,
)
from tests.unit.test_run_state_machine import EPOCH, submit_run

CLIENT_TIME = datetime(2024, 12, 21, tzinfo=UTC)


def without_reported_at(app: ControlRoom, stored: StoredEvent) -> StoredEvent:
    """The stored event as it was written before `reported_at` existed."""
    state = app.mapper.transcoder.decode(stored.state)
    assert "reported_at" in state
    del state["reported_at"]
    return StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                       app.mapper.transcoder.encode(state))


def test_events_stored_without_reported_at_still_load() -> None:
    app = ControlRoom(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    run = submit_run()
    run.start(attempt=1, worker_id="w", now=EPOCH)
    run.progress(percent=40, message="loading rows", now=EPOCH, reported_at=CLIENT_TIME)
    run.log(text="hi", stream="stdout", lines=1, now=EPOCH, reported_at=CLIENT_TIME)
    run.record_lineage(source="a", target="b", now=EPOCH, reported_at=CLIENT_TIME)
    run.add_artifact(artifact={"artifact_id": "x", "path": "p"}, now=EPOCH,
                     reported_at=CLIENT_TIME)
    events = run.collect_events()
    old = [app.mapper.to_domain_event(without_reported_at(app, app.mapper.to_stored_event(e)))
           if hasattr(e, "reported_at") else e for e in events]
    assert sum(hasattr(e, "reported_at") for e in events) == 4
    replayed = None
    for e in old:
        replayed = e.mutate(replayed)
    assert replayed is not None and replayed.status == "running" and replayed.version == run.version
    assert all(getattr(e, "reported_at", None) is None for e in old[2:])


def test_an_external_artifact_is_recorded_with_what_is_known_only() -> None:
    run_id = uuid4()
    a = external_artifact(run_id, 1, path="out/r.csv", url="s3://b/out/r.csv", size=3).fields()
    assert a["external"] is True and a["url"] == "s3://b/out/r.csv" and a["size"] == 3
    assert "sha256" not in a and "content_type" not in a
    assert a["artifact_id"] == external_artifact(run_id, 1, path="out/r.csv", url="x").artifact_id


@pytest.mark.parametrize(("url", "ok"), [
    ("https://x.example/a.csv", True), ("s3://bucket/key", True), ("gs://b/k", True),
    ("file:///etc/passwd", False), ("javascript:alert(1)", False), ("https://", False),
    ("relative/path", False),
])
def test_external_urls_need_a_known_scheme_and_a_host(url: str, ok: bool) -> None:
    assert (url_problem(url) is None) is ok


@pytest.mark.parametrize(("path", "ok"), [
    ("output/a.csv", True), ("../a", False), ("/abs", False), ("logs/run.log", False),
    ("code/main.py", False), ("", False),
])
def test_external_paths_are_relative_and_not_reserved(path: str, ok: bool) -> None:
    assert (path_problem(path) is None) is ok


def test_a_url_names_its_path() -> None:
    assert path_from_url("s3://bucket/out/r.csv") == "out/r.csv"
    assert path_from_url("https://host.example/") == "host.example"
