"""Tenant admins issue, list and revoke API keys for headless clients; a key is shown once."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath

from controlroom.api.api_keys.auth import ApiKeyDeps
from controlroom.api.auth import Principal, requires
from controlroom.api.deps import API_KEYS, Deps
from controlroom.api.problems import ProblemError, from_decode_error
from controlroom.api.views import API
from controlroom.commands.errors import ApiKeyNotFoundError
from controlroom.domain.api_keys import MAX_EXPIRES_IN_DAYS, MAX_NAME_CHARS

ADMIN = "admin"


class ApiKeyBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/v1/api-keys."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS)]
    scopes: list[str] | None = None
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=MAX_EXPIRES_IN_DAYS)] | None = None


class ApiKeyView(msgspec.Struct):
    """An API key as listings show it: never the key, never its hash."""

    id: UUID
    name: str
    scopes: list[str]
    last4: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None


class NewApiKey(ApiKeyView):
    """The one response that carries the key itself."""

    key: str


class ApiKeyList(msgspec.Struct):
    """GET /api/v1/api-keys."""

    api_keys: list[ApiKeyView]


_decode_body = msgspec.json.Decoder(ApiKeyBody)


def _keys(request: Request[Any, Any, Any]) -> ApiKeyDeps:
    deps: Deps = request.app.state.deps
    if deps.api_keys is None:
        raise RuntimeError("no ApiKeyDeps were given to Deps")
    return deps.api_keys


def _body(raw: bytes) -> ApiKeyBody:
    if not raw:
        raise ProblemError(400, "Malformed JSON", 'request body is empty; expected {"name": "…"}')
    try:
        return _decode_body.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise from_decode_error(e) from None


def _view(row: Mapping[str, Any]) -> ApiKeyView:
    return ApiKeyView(row["id"], row["name"], list(row["scopes"]), row["last4"], row["created_by"],
                      row["created_at"], row["expires_at"])


@post(f"{API}/api-keys", guards=[requires(ADMIN)], status_code=201)
async def create_api_key(request: Request[Principal, str, Any]) -> Response[NewApiKey]:
    """Issue a key for the caller's tenant; the response is the only time it is shown."""
    deps: Deps = request.app.state.deps
    body = _body(await request.body())
    issued = await deps.write(_keys(request).commands.issue, request.user.tenant_id, body.name,
                              body.scopes, body.expires_in_days, request.user.sub)
    await deps.settle(issued.position, API_KEYS)
    view = NewApiKey(issued.id, issued.name, issued.scopes, issued.last4, issued.created_by,
                     issued.created_at, issued.expires_at, issued.key)
    return Response(view, status_code=201, headers={"Cache-Control": "no-store"})


@get(f"{API}/api-keys", guards=[requires(ADMIN)])
async def list_api_keys(request: Request[Principal, str, Any]) -> ApiKeyList:
    """The tenant's live (unrevoked) keys, oldest first."""
    rows = await _keys(request).reads.list(request.user.tenant_id)
    return ApiKeyList([_view(r) for r in rows])


@delete(f"{API}/api-keys/{{key_id:str}}", guards=[requires(ADMIN)], status_code=204)
async def revoke_api_key(request: Request[Principal, str, Any], key_id: FromPath[str]) -> None:
    """Revoke a key: it stops working here at once, elsewhere within the cache bound."""
    deps: Deps = request.app.state.deps
    keys = _keys(request)
    try:
        key_uuid = UUID(key_id)
    except ValueError:
        raise ApiKeyNotFoundError(key_id) from None
    position = await deps.write(keys.commands.revoke, request.user.tenant_id, key_uuid,
                                request.user.sub)
    await deps.settle(position, API_KEYS)
    keys.verifier.forget(key_uuid)
