"""GET /api/v1/artifacts: the tenant's artifacts, newest first, a page at a time."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from uuid import UUID

from litestar import Request, get
from litestar.params import FromQuery, QueryParameter

from controlroom.api.auth import Principal, requires
from controlroom.api.deps import Deps
from controlroom.api.problems import invalid
from controlroom.api.schemas import ArtifactPage
from controlroom.api.views import API, artifact_view
from controlroom.commands.errors import RunNotFoundError

MAX_PAGE = 200
_CURSOR = "artifacts:"


def encode_cursor(position: int) -> str:
    """An opaque cursor pointing just after (older than) the artifact recorded at `position`."""
    return base64.urlsafe_b64encode(f"{_CURSOR}{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The log position a cursor points before; 422 if it isn't one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raw = ""
    digits = raw.removeprefix(_CURSOR)
    if not raw.startswith(_CURSOR) or not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise invalid("cursor", "not a cursor returned by this API")
    return int(digits)


@get(f"{API}/artifacts", guards=[requires("artifacts:read", run_token=True)])
async def list_artifacts(
    request: Request[Principal, str, Any],
    run_id: FromQuery[UUID | None] = None,
    path_prefix: Annotated[str | None, QueryParameter(
        max_length=512, description="only artifacts whose path starts with this")] = None,
    cursor: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
) -> ArtifactPage:
    """The caller's artifacts, newest first; pass `next_cursor` back as `cursor` for more.

    A run's token sees its own run's artifacts only.
    """
    deps: Deps = request.app.state.deps
    own = request.user.run_id
    if own is not None:
        if run_id is not None and run_id != own:
            raise RunNotFoundError(run_id)  # a run token knows no other run
        run_id = own
    rows = await deps.reads.artifacts(
        request.user.tenant_id, run_id=run_id, path_prefix=path_prefix or None,
        before=decode_cursor(cursor) if cursor else None, limit=limit + 1)
    page = rows[:limit]
    more = len(rows) > limit
    return ArtifactPage(artifacts=[artifact_view(r) for r in page],
                        next_cursor=encode_cursor(page[-1]["position"]) if more and page else None)
