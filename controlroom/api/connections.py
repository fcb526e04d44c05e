"""Tenant admins manage named database connections; passwords are never shown."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, put
from litestar.params import FromPath

from controlroom.api.auth import Principal, requires
from controlroom.api.deps import CONNECTIONS, ConnectionReadsPort, Deps
from controlroom.api.problems import ProblemError, from_decode_error
from controlroom.api.views import API, Row
from controlroom.commands.connections import ConnectionCommands
from controlroom.commands.errors import ConnectionNotFoundError
from controlroom.domain.connections import MAX_DSN_CHARS, check_name

ADMIN = "admin"


class ConnectionBody(msgspec.Struct, forbid_unknown_fields=True):
    """PUT /api/v1/connections/{name}."""

    dsn: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_DSN_CHARS)]


class ConnectionView(msgspec.Struct):
    """A connection as the API shows it: the DSN with its password masked."""

    name: str
    dsn: str
    created_at: datetime
    updated_at: datetime
    updated_by: str


class ConnectionList(msgspec.Struct):
    """GET /api/v1/connections."""

    connections: list[ConnectionView]


_decode_body = msgspec.json.Decoder(ConnectionBody)


def _commands(deps: Deps) -> ConnectionCommands:
    if deps.connections is None:
        raise RuntimeError("no ConnectionCommands were given to Deps")
    return deps.connections


def _reads(deps: Deps) -> ConnectionReadsPort:
    if deps.connection_reads is None:
        raise RuntimeError("no ConnectionReadsPort was given to Deps")
    return deps.connection_reads


def _view(row: Row) -> ConnectionView:
    return ConnectionView(row["name"], row["display_dsn"], row["created_at"], row["updated_at"],
                          row["updated_by"])


def _body(raw: bytes) -> ConnectionBody:
    if not raw:
        raise ProblemError(400, "Malformed JSON", 'request body is empty; expected {"dsn": "…"}')
    try:
        return _decode_body.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise from_decode_error(e) from None


@put(f"{API}/connections/{{name:str}}", guards=[requires(ADMIN)], status_code=200)
async def put_connection(
    request: Request[Principal, str, Any], name: FromPath[str]
) -> Response[ConnectionView]:
    """Create or replace a connection: 201 when new, 200 when replaced."""
    deps: Deps = request.app.state.deps
    check_name(name)
    body = _body(await request.body())
    saved = await deps.write(_commands(deps).set, request.user.tenant_id, name, body.dsn,
                             request.user.sub)
    await deps.settle(saved.position, CONNECTIONS)
    view = ConnectionView(saved.name, saved.display_dsn, saved.created_at, saved.updated_at,
                          saved.updated_by)
    return Response(view, status_code=201 if saved.created else 200,
                    headers={"Location": f"{API}/connections/{name}"})


@get(f"{API}/connections", guards=[requires(ADMIN)])
async def list_connections(request: Request[Principal, str, Any]) -> ConnectionList:
    """The tenant's connections, by name."""
    deps: Deps = request.app.state.deps
    rows = await _reads(deps).list(request.user.tenant_id)
    return ConnectionList([_view(r) for r in rows])


@get(f"{API}/connections/{{name:str}}", guards=[requires(ADMIN)])
async def get_connection(request: Request[Principal, str, Any], name: FromPath[str]) -> ConnectionView:
    """One connection of the tenant."""
    deps: Deps = request.app.state.deps
    row = await _reads(deps).get(request.user.tenant_id, name)
    if row is None:
        raise ConnectionNotFoundError(name)
    return _view(row)


@delete(f"{API}/connections/{{name:str}}", guards=[requires(ADMIN)], status_code=204)
async def delete_connection(request: Request[Principal, str, Any], name: FromPath[str]) -> None:
    """Remove a connection; runs planned afterwards can no longer use it."""
    deps: Deps = request.app.state.deps
    position = await deps.write(_commands(deps).delete, request.user.tenant_id, name,
                                request.user.sub)
    await deps.settle(position, CONNECTIONS)
