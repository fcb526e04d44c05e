"""Reading artifacts: metadata and streamed bytes (uploads and listings come later)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, BinaryIO
from urllib.parse import quote
from uuid import UUID

from litestar import Request, Response, get
from litestar.params import FromPath
from litestar.response import Stream

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
    if row is None:
        raise _not_found(artifact_id)
    return row


@get(f"{API}/artifacts/{{artifact_id:uuid}}", guards=[requires("artifacts:read")])
async def get_artifact(
    request: Request[Principal, str, Any], artifact_id: FromPath[UUID]
) -> ArtifactView:
    """An artifact's metadata: its run, path, size, sha256, content type and download url."""
    return artifact_view(await _row(request, artifact_id))


@get(f"{API}/artifacts/{{artifact_id:uuid}}/content", guards=[requires("artifacts:read")])
async def get_artifact_content(
    request: Request[Principal, str, Any], artifact_id: FromPath[UUID]
) -> Response[Any]:
    """The artifact's bytes, streamed; `ETag` is its quoted sha256 (`If-None-Match` → 304)."""
    row = await _row(request, artifact_id)
    etag = f'"{row["sha256"]}"'
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(None, status_code=304, headers={"ETag": etag})
    deps: Deps = request.app.state.deps
    if deps.artifacts is None:
        raise _not_found(artifact_id)
    try:
        source = await asyncio.to_thread(deps.artifacts.open, row["sha256"])
    except FileNotFoundError:
        # Metadata without bytes: the store isn't shared with the worker that wrote them.
        log.warning("artifact %s: bytes %s missing from the artifact store", artifact_id,
                    row["sha256"])
        raise _not_found(artifact_id) from None
    name = row["path"].rsplit("/", 1)[-1]
    return Stream(
        _chunks(source), media_type=row["content_type"],
        headers={
            "ETag": etag, "Content-Length": str(row["size"]),
            # Job output is untrusted: never rendered inline or sniffed into something else.
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


async def _chunks(source: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(source.read, CHUNK_BYTES):
            yield chunk
    finally:
        source.close()
