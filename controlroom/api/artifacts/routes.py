"""Reading artifacts: metadata, and the bytes streamed whole or by range (uploads: uploads.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit
from uuid import UUID

from litestar import Request, Response, get
from litestar.params import FromPath
from litestar.response import Redirect, Stream

from controlroom.api.auth import Principal, requires
from controlroom.api.deps import Deps, Record
from controlroom.api.problems import ProblemError
from controlroom.api.schemas import ArtifactView
from controlroom.api.views import API, artifact_view

log = logging.getLogger("controlroom.api")

CHUNK_BYTES = 256 * 1024


def _not_found(artifact_id: UUID) -> ProblemError:
    return ProblemError(404, "Artifact not found", f"artifact {artifact_id} not found")


async def _row(request: Request[Principal, str, Any], artifact_id: UUID) -> Record:
    deps: Deps = request.app.state.deps
    row = await deps.reads.artifact(request.user.tenant_id, artifact_id)
    own = request.user.run_id  # a run token reaches its own run's artifacts only
    if row is None or (own is not None and row["run_id"] != own):
        raise _not_found(artifact_id)
    return row


@get(f"{API}/artifacts/{{artifact_id:uuid}}", guards=[requires("artifacts:read", run_token=True)])
async def get_artifact(
    request: Request[Principal, str, Any], artifact_id: FromPath[UUID]
) -> ArtifactView:
    """An artifact's metadata: its run, path, size, sha256, content type and download url."""
    return artifact_view(await _row(request, artifact_id))


@get(f"{API}/artifacts/{{artifact_id:uuid}}/content",
     guards=[requires("artifacts:read", run_token=True)])
async def get_artifact_content(
    request: Request[Principal, str, Any], artifact_id: FromPath[UUID]
) -> Response[Any]:
    """The artifact's bytes, streamed; `ETag` is its quoted sha256 (`If-None-Match` → 304).

    One `Range` (`bytes=a-b`, `a-`, `-n`) is answered 206 with `Content-Range`, an
    unsatisfiable one 416; several ranges, or an `If-Range` that no longer matches, get
    the whole content.
    """
    row = await _row(request, artifact_id)
    if row["url"] is not None:
        return _elsewhere(row["url"])
    etag, size = f'"{row["sha256"]}"', row["size"]
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(None, status_code=304, headers={"ETag": etag})
    deps: Deps = request.app.state.deps
    if deps.artifacts is None:
        raise _not_found(artifact_id)
    span = None
    if_range = request.headers.get("if-range")
    if if_range is None or if_range.strip() == etag:
        span = byte_range(request.headers.get("range"), size)
    start, end = span or (0, size - 1)
    try:
        source = await asyncio.to_thread(deps.artifacts.open, row["sha256"])
    except FileNotFoundError:
        # Metadata without bytes: the store isn't shared with the worker that wrote them.
        log.warning("artifact %s: bytes %s missing from the artifact store", artifact_id,
                    row["sha256"])
        raise _not_found(artifact_id) from None
    if start:
        await asyncio.to_thread(source.seek, start)
    name = row["path"].rsplit("/", 1)[-1]
    headers = {
        "ETag": etag, "Content-Length": str(end - start + 1), "Accept-Ranges": "bytes",
        # Job output is untrusted: never rendered inline or sniffed into something else.
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
    }
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Stream(_chunks(source, end - start + 1), media_type=row["content_type"],
                  status_code=206 if span is not None else 200, headers=headers)


def _elsewhere(url: str) -> Response[Any]:
    """An external artifact's bytes are at its URL: a web one is a redirect there (307); any
    other (`s3://…`) can't be followed by a browser, so the answer says where to fetch it."""
    if urlsplit(url).scheme.lower() in ("http", "https"):
        return Redirect(url, status_code=307)
    raise ProblemError(409, "Artifact kept elsewhere",
                       f"this artifact was registered by reference; its bytes are at {url}")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) byte of a single-range `Range` header; None to send everything.

    Raises a 416 problem when the range can't be satisfied (RFC 9110 §14).
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # another unit, or several ranges: the whole representation is fine
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or not all(
            p.isdigit() for p in (first, last) if p):
        return None  # syntactically invalid: ignored, as the RFC asks
    if not first:  # a suffix: the last N bytes
        if int(last) == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - int(last), 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> ProblemError:
    return ProblemError(416, "Range not satisfiable", f"the artifact holds {size} bytes",
                        headers={"Content-Range": f"bytes */{size}"})


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


async def _chunks(source: BinaryIO, length: int) -> AsyncIterator[bytes]:
    try:
        while length > 0 and (chunk := await asyncio.to_thread(source.read, min(CHUNK_BYTES, length))):
            length -= len(chunk)
            yield chunk
    finally:
        source.close()
