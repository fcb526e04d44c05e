"""Outputs → artifacts: what a job left in `output/` is stored and recorded on its run."""

from __future__ import annotations

import logging
import mimetypes
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from controlroom.commands.ports import ArtifactStore, Execution
from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.artifacts.artifact import Artifact
from controlroom.domain.artifacts.paths import reserved_prefix

log = logging.getLogger("controlroom.worker")

MAX_ARTIFACT_BYTES = 1024**3
"""Per file; larger outputs are skipped with a line in the run's log."""
MAX_OUTPUT_BYTES = 4 * 1024**3
"""Per attempt, all files together."""
MAX_OUTPUT_FILES = 1000
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_EXTRA_TYPES = {
    ".md": "text/markdown", ".log": "text/plain", ".yaml": "application/yaml",
    ".yml": "application/yaml", ".parquet": "application/vnd.apache.parquet",
    ".dot": "text/vnd.graphviz", ".gv": "text/vnd.graphviz", ".sql": "application/sql",
}
_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz",
               "br": "application/x-brotli", "compress": "application/x-compress"}
# Python's built-in table only: the host's /etc/mime.types would make types vary by machine.
_TYPES = mimetypes.MimeTypes()


def content_type(path: str) -> str:
    """The media type guessed from a file name's extension."""
    dot = path.rfind(".")
    ext = path[dot:].lower() if dot > path.rfind("/") else ""
    if ext in _EXTRA_TYPES:
        return _EXTRA_TYPES[ext]
    guessed, encoding = _TYPES.guess_type(path, strict=False)
    if encoding:  # report.csv.gz is gzip bytes, not CSV
        return _COMPRESSED.get(encoding, DEFAULT_CONTENT_TYPE)
    return guessed or DEFAULT_CONTENT_TYPE


def artifact_id(run_id: UUID, attempt: int, path: str) -> UUID:
    """Stable id of the artifact an attempt wrote at `path` (re-recording it changes nothing)."""
    return uuid5(NAMESPACE_URL, f"controlroom:artifact:{run_id}:{attempt}:{path}")


def _utf8(name: str) -> bool:
    """False for names with undecodable bytes (surrogate escapes), which JSON can't carry."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _size(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


def collect_outputs(
    commands: RunCommands, store: ArtifactStore, execution: Execution, run_id: UUID, attempt: int
) -> None:
    """Store every file under `output/` and record ArtifactAdded events (before the outcome)."""
    notes, artifacts = store_outputs(store, execution, run_id, attempt)
    if notes:
        commands.log(run_id, [("system", "\n".join(notes), len(notes))], attempt)
    if artifacts:
        commands.add_artifacts(run_id, artifacts, attempt)


def store_outputs(
    store: ArtifactStore, execution: Execution, run_id: UUID, attempt: int
) -> tuple[list[str], list[dict[str, Any]]]:
    """Store every file under `output/`: the notes for the run's log (files skipped) and the
    artifacts to record. Needs no database, so a worker can do it while the database is away."""
    artifacts: list[dict[str, Any]] = []
    notes: list[str] = []
    total = 0
    for out in execution.output_files():
        name = f"output/{out.path}"
        if len(artifacts) >= MAX_OUTPUT_FILES:
            notes.append(f"{name} and later files skipped: more than {MAX_OUTPUT_FILES} output files")
            break
        if not _utf8(out.path):
            notes.append(f"{name!r} skipped: its name is not valid UTF-8")
            continue
        if (prefix := reserved_prefix(out.path)) is not None:  # would sit beside the real log/code
            notes.append(f"{name} skipped: {prefix} is reserved for the run's archived code and log")
            continue
        if out.size > MAX_ARTIFACT_BYTES:
            notes.append(f"{name} skipped: {_size(out.size)} exceeds the per-file limit "
                         f"of {_size(MAX_ARTIFACT_BYTES)}")
            continue
        if total + out.size > MAX_OUTPUT_BYTES:
            notes.append(f"{name} skipped: the run's outputs would exceed {_size(MAX_OUTPUT_BYTES)}")
            continue
        try:
            sha256, size = store.put_file(out.file)
        except OSError as e:
            notes.append(f"{name} skipped: could not be stored ({e.strerror or e})")
            continue
        total += size
        artifacts.append(Artifact(
            artifact_id=str(artifact_id(run_id, attempt, out.path)), path=out.path, size=size,
            sha256=sha256, content_type=content_type(out.path), attempt=attempt,
        ).fields())  # as the worker's spool keeps them
    for note in notes:
        log.warning("run %s: %s", run_id, note)
    return notes, artifacts
