"""What a run keeps so it can be understood and reproduced: its code and its whole log.

The worker stores both, so the submit path does no extra work: the submitted code files
when it starts a run's first attempt (`code/<path>`), and the run's log — every log event
of every attempt so far, read back from the event store, as `GET /runs/{id}/logs` shows it
— just before it records how an attempt ended (`logs/run.log`; the last one is the run's
full log). Archiving never decides an outcome: a failure to store is logged and skipped.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from controlroom.commands.errors import RunNotFoundError
from controlroom.commands.execution.outputs import content_type
from controlroom.commands.ports import ArtifactStore
from controlroom.commands.retrying import is_unavailable
from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.artifacts.artifact import Artifact
from controlroom.domain.artifacts.paths import CODE_PREFIX, LOG_PATH
from controlroom.domain.errors import DomainError
from controlroom.domain.runs.run import Run

log = logging.getLogger("controlroom.worker")

EVENTS_PAGE = 200
"""Events read from the store at a time while writing the log out."""


def archived_id(run_id: UUID, attempt: int, path: str) -> UUID:
    """Stable id of an archived artifact (apart from a job output of the same path)."""
    return uuid5(NAMESPACE_URL, f"controlroom:archive:{run_id}:{attempt}:{path}")


def _artifact(run_id: UUID, attempt: int, path: str, sha256: str, size: int,
              media_type: str) -> Artifact:
    return Artifact(artifact_id=str(archived_id(run_id, attempt, path)), path=path, size=size,
                    sha256=sha256, content_type=media_type, attempt=attempt)


def archive_code(commands: RunCommands, store: ArtifactStore, run: Run) -> None:
    """Store the submitted code files as artifacts of the run's first attempt."""
    if run.attempt != 1:
        return  # archived when the first attempt started
    try:
        artifacts: list[Artifact] = []
        for f in run.code.get("files", []):
            sha256, size = store.put_bytes(f["content"].encode())
            path = CODE_PREFIX + f["path"]
            artifacts.append(_artifact(run.id, 1, path, sha256, size, content_type(path)))
        if artifacts:
            commands.add_artifacts(run.id, artifacts, 1)
    except Exception as e:  # the store's errors vary by backend; the run goes on regardless
        log.warning("run %s: code files not archived: %s", run.id, e)


def _write_log(commands: RunCommands, run_id: UUID, dest: Any) -> None:
    version: int | None = None
    while page := list(commands.app.events.get(run_id, gt=version, limit=EVENTS_PAGE)):
        for event in page:
            if isinstance(event, Run.RunLogged):
                dest.write(event.text.encode("utf-8", "replace") + b"\n")
        version = page[-1].originator_version


def archive_log(commands: RunCommands, store: ArtifactStore, run_id: UUID, attempt: int,
                *, seq: int | None = None) -> None:
    """Store the run's log so far as an artifact of `attempt` (call before its outcome).

    The database being away is raised (the caller retries: the log is read from it); any
    other failure is logged and skipped. `seq`: the worker's number for this write.
    """
    fd, name = tempfile.mkstemp(prefix="run-log-")
    try:
        with os.fdopen(fd, "wb") as dest:
            _write_log(commands, run_id, dest)
        sha256, size = store.put_file(Path(name))
        commands.add_artifacts(
            run_id, [_artifact(run_id, attempt, LOG_PATH, sha256, size, "text/plain")], attempt,
            seq=seq)
    except Exception as e:  # the store's errors vary by backend; the outcome is recorded anyway
        if is_unavailable(e) or isinstance(e, DomainError | RunNotFoundError):
            raise
        log.warning("run %s: log not archived: %s", run_id, e)
    finally:
        Path(name).unlink(missing_ok=True)
