"""POST /api/v1/artifacts: bytes streamed to the artifact store, then `ArtifactAdded` on the run.

Two request forms: a raw body (`?run_id=…&path=…`, its `Content-Type` kept as the artifact's)
or `multipart/form-data` with fields `run_id`, `path` (these may also be query parameters)
and one file part, parsed as it arrives (the `multipart` library's push parser). Either way
the bytes go to a spool file in 1 MiB writes, hashed on the way, so memory stays flat; the
store then adopts the file under its sha256. Only a queued or running run takes artifacts.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import tempfile
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import multipart
from litestar import Request, Response, post
from litestar.params import FromQuery

from controlroom.api.auth import Principal, requires
from controlroom.api.deps import Deps
from controlroom.api.gate.json_body import RAW_BODY
from controlroom.api.problems import ProblemError, invalid
from controlroom.api.schemas import ArtifactView
from controlroom.api.views import API, artifact_view
from controlroom.commands.errors import RunNotFoundError
from controlroom.commands.execution.outputs import DEFAULT_CONTENT_TYPE, content_type
from controlroom.domain.artifacts.artifact import Artifact
from controlroom.domain.artifacts.paths import RESERVED_PREFIXES, reserved_prefix
from controlroom.domain.runs.status import ACTIVE

WRITE_BYTES = 1024 * 1024
"""Spool writes are batched to this size (one thread hop each)."""
MAX_FIELD_BYTES = 4096
MULTIPART_OVERHEAD = 64 * 1024
MAX_PATH = 512


class _Spool:
    """A temp file under the store's spool dir, hashed and size-checked as it is written."""

    def __init__(self, directory: Path, limit: int) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix="upload-")
        self.file, self.path, self.limit = os.fdopen(fd, "wb"), Path(name), limit
        self.digest, self.size, self._buffer = hashlib.sha256(), 0, bytearray()

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise _too_large(self.limit)
        self._buffer += chunk
        if len(self._buffer) >= WRITE_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        data = bytes(self._buffer)
        self._buffer.clear()
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        self.digest.update(data)  # hashlib releases the GIL on large buffers
        self.file.write(data)

    async def finish(self) -> str:
        await self._flush()
        await asyncio.to_thread(self.file.close)
        return self.digest.hexdigest()

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def _too_large(limit: int) -> ProblemError:
    return ProblemError(413, "Payload too large", f"an artifact may hold at most {limit} bytes")


def _artifact_path(path: str | None) -> str:
    if not path:
        raise invalid("path", "required: where the artifact belongs in the run (e.g. report.csv)")
    norm = posixpath.normpath(path)
    if (len(path) > MAX_PATH or path.startswith("/") or "\\" in path or "\x00" in path
            or norm.startswith("..") or norm == "."):
        raise invalid("path", f"must be a relative path of at most {MAX_PATH} characters")
    if (prefix := reserved_prefix(norm)) is not None:
        raise invalid("path", f"{path!r} is under {prefix!r}, reserved for the run's archived "
                      f"code and log (reserved: {', '.join(RESERVED_PREFIXES)})")
    return norm


def _run_id(value: str | None) -> UUID:
    try:
        return UUID(value or "")
    except ValueError:
        raise invalid("run_id", "required: the id of a run") from None


async def _receive_multipart(request: Request[Any, Any, Any], spool: _Spool,
                             fields: dict[str, str]) -> str | None:
    """Feed the body through the push parser; fills `fields`, returns the file part's type."""
    _, options = multipart.parse_options_header(request.headers.get("content-type", ""))
    file_type: str | None = None
    in_file = done_file = False
    field: str | None = None
    try:
        parser = multipart.PushMultipartParser(options.get("boundary", ""), max_segment_count=16)
        with parser:
            async for chunk in request.stream():
                for event in parser.parse(chunk):
                    if isinstance(event, multipart.MultipartSegment):
                        if event.filename is not None or event.name == "file":
                            if done_file:
                                raise invalid("file", "send one file per request")
                            in_file, file_type = True, event.content_type
                        else:
                            field, fields[event.name or ""] = event.name or "", ""
                    elif event is None:
                        done_file, in_file, field = done_file or in_file, False, None
                    elif in_file:
                        await spool.write(event)
                    elif field is not None:
                        fields[field] += event.decode("utf-8", "replace")
                        if len(fields[field]) > MAX_FIELD_BYTES:
                            raise invalid(field, "form field too long")
    except multipart.MultipartError as e:
        raise ProblemError(400, "Malformed multipart body", str(e)) from None
    if not done_file:
        raise invalid("file", "a multipart upload needs a file part")
    return file_type


FORM_FIELDS = ("run_id", "path")
"""What a multipart upload may carry beside its file: nothing else is kept, so nothing else is taken."""


def _given_once(name: str, query: str | None, fields: dict[str, str]) -> str | None:
    """`name` from the query or the form; refused when unknown fields came, or it came twice
    with different values (one of them would be dropped)."""
    unknown = sorted(set(fields) - set(FORM_FIELDS))
    if unknown:
        raise invalid(unknown[0] or "(unnamed)",
                      f"unknown form field; an upload takes {', '.join(FORM_FIELDS)} and one file")
    form = fields.get(name)
    if query is not None and form is not None and query != form:
        raise invalid(name, "given in the query and in the form with different values")
    return query if query is not None else form


def _confine(user: Principal, run_id: UUID) -> None:
    """A run token reaches its own run only: any other is a 404, whether it exists or not."""
    if user.run_id is not None and run_id != user.run_id:
        raise RunNotFoundError(run_id)


async def _check_run(deps: Deps, user: Principal, run_id: UUID) -> None:
    """Refuse early, before reading the body, when the run can't take artifacts."""
    _confine(user, run_id)  # first: the state of a run it may not see is none of its business
    row = await deps.reads.get(user.tenant_id, run_id)
    if row is None:
        raise RunNotFoundError(run_id)
    if row["status"] not in ACTIVE:
        raise ProblemError(409, "Run has ended",
                           f"run {run_id} is {row['status']}: artifacts are added while it is active")


@post(f"{API}/artifacts", guards=[requires("artifacts:write", run_token=True)],
      status_code=201, request_max_body_size=None,  # the limit is ours, counted while streaming
      opt={"body": RAW_BODY})  # bytes or multipart, never JSON: streamed, not buffered
async def upload_artifact(
    request: Request[Principal, str, Any], run_id: FromQuery[str | None] = None,
    path: FromQuery[str | None] = None,
) -> Response[ArtifactView]:
    """Store an artifact of a queued or running run: raw body or multipart `file` part."""
    deps: Deps = request.app.state.deps
    if deps.artifacts is None:
        raise ProblemError(503, "No artifact store", "this service keeps no artifacts")
    user, limit = request.user, deps.max_artifact_bytes
    is_multipart = request.content_type[0] == "multipart/form-data"
    announced = int(request.headers.get("content-length") or 0)
    if announced > limit + (MULTIPART_OVERHEAD if is_multipart else 0):
        raise _too_large(limit)
    if run_id is not None:
        await _check_run(deps, user, _run_id(run_id))
    if path:
        _artifact_path(path)  # a refused path is refused unread
    spool = _Spool(deps.artifacts.spool_dir, limit)
    try:
        fields: dict[str, str] = {}
        if is_multipart:
            media_type = await _receive_multipart(request, spool, fields)
        else:
            media_type = request.headers.get("content-type")
            async for chunk in request.stream():
                await spool.write(chunk)
        sha256 = await spool.finish()
        rid = _run_id(_given_once("run_id", run_id, fields))
        name = _artifact_path(_given_once("path", path, fields))
        await _check_run(deps, user, rid)
        await asyncio.to_thread(deps.artifacts.put_spooled, spool.path, sha256)
    finally:
        spool.discard()
    if not media_type or media_type.split(";")[0].strip() == DEFAULT_CONTENT_TYPE:
        media_type = content_type(name)  # a generic type says nothing: guess from the name
    artifact = Artifact(artifact_id=str(uuid.uuid4()), path=name, size=spool.size, sha256=sha256,
                        content_type=media_type.strip()[:255])
    position = await deps.write(deps.commands.upload_artifact, user.tenant_id, rid, artifact,
                                user.attempt)
    await deps.settle(position)
    row = await deps.reads.artifact(user.tenant_id, UUID(artifact.artifact_id))
    if row is None:  # the read model is lagging: answer from what was recorded
        raise ProblemError(503, "Busy", "the artifact was stored; its metadata is not readable yet",
                           headers={"Retry-After": "1"})
    view = artifact_view(row)
    return Response(view, status_code=201, headers={"Location": f"{API}/artifacts/{view.artifact_id}"})
