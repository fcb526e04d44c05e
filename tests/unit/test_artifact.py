"""An artifact is recorded in the shape `ArtifactAdded` has always had, and read back from it."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.artifacts.artifact import Artifact
from controlroom.domain.artifacts.external import external_artifact
from controlroom.domain.runs.run import Run
from tests.fast.memory import job, run_commands

DIGEST = "a" * 64


def stored(artifact_id: str) -> dict[str, Any]:
    """A stored artifact's object as releases before the typed artifact wrote it."""
    return {"artifact_id": artifact_id, "path": "out/a.csv", "size": 3, "sha256": DIGEST,
            "content_type": "text/csv", "attempt": 1}


def external(artifact_id: str) -> dict[str, Any]:
    """An external artifact's, likewise (only what is known of it)."""
    return {"artifact_id": artifact_id, "path": "out/r.csv", "url": "s3://b/out/r.csv",
            "external": True, "attempt": 1, "size": 3}


def states(commands: RunCommands, run_id: UUID) -> list[bytes]:
    """The stored bytes of the run's ArtifactAdded events, in order."""
    return [s.state for s in commands.app.recorder.select_events(run_id)
            if s.topic.endswith("ArtifactAdded")]


def running() -> tuple[RunCommands, UUID]:
    commands = run_commands()
    run_id = commands.submit(job()).run_id
    commands.start(run_id, 1, "worker-1")
    return commands, run_id


def test_a_typed_artifact_is_stored_byte_for_byte_as_its_fields_were() -> None:
    commands, run_id = running()
    artifact_id = str(uuid4())
    ext = external_artifact(run_id, 1, path="out/r.csv", url="s3://b/out/r.csv", size=3)
    typed = [Artifact(artifact_id=artifact_id, path="out/a.csv", size=3, sha256=DIGEST,
                      content_type="text/csv", attempt=1), ext]
    commands.add_artifacts(run_id, typed, 1)
    commands.add_artifacts(run_id, [stored(artifact_id), external(ext.artifact_id)], 1)
    new_a, new_b, old_a, old_b = states(commands, run_id)
    # Only the version and the time differ between the two appends.
    assert [list(a.fields().items()) for a in typed] == [
        list(stored(artifact_id).items()), list(external(ext.artifact_id).items())]
    assert b'"artifact":{"artifact_id"' in new_a and new_a.count(b"external") == 0
    assert new_b.split(b'"artifact":')[1].split(b"}")[0] == old_b.split(b'"artifact":')[1].split(b"}")[0]
    assert new_a.split(b'"artifact":')[1].split(b"}")[0] == old_a.split(b'"artifact":')[1].split(b"}")[0]


@pytest.mark.parametrize("old", [stored, external])
def test_an_event_stored_in_the_old_shape_replays_and_reads_as_an_artifact(old: Any) -> None:
    commands, run_id = running()
    fields = old(str(uuid4()))
    commands.add_artifacts(run_id, [fields], 1)
    commands.app.repository.cache = None  # from the log, not from the copy just saved
    run = commands.load(run_id)
    (added,) = [e for e in commands.app.events.get(run_id) if isinstance(e, Run.ArtifactAdded)]
    assert run.version == added.originator_version and added.artifact == fields
    artifact = Artifact.from_fields(added.artifact)
    assert artifact is not None and artifact.fields() == fields
    assert artifact.external == ("url" in fields)


def test_fields_lacking_an_id_or_a_path_read_as_no_artifact() -> None:
    assert Artifact.from_fields({"path": "p"}) is None
    assert Artifact.from_fields({"artifact_id": "x"}) is None
    legacy = Artifact.from_fields({"artifact_id": "x", "path": "p"})
    assert legacy == Artifact(artifact_id="x", path="p", attempt=1)
