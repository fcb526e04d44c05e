"""Resolving `spec.inputs` / `spec.outputs` table URIs through the tenant's connections.

Grammar (shared with pre-flight validation, controlroom/validation/uris.py):
`[<connection>://]<schema>[.<table>]` — the scheme *is* the connection's name. A job gets
each connection's DSN in `CONTROLROOM_CONNECTION_<NAME>` and the parsed URIs as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from controlroom.commands.errors import ConnectionNotFoundError
from controlroom.commands.ports import Connections, PlanError
from controlroom.domain.lineage.data_flow import DeclarationError, Declared, read, written
from controlroom.validation.uris import TableUri, UriError, connection_env, parse_uri

INPUTS_ENV = "CONTROLROOM_INPUTS"
OUTPUTS_ENV = "CONTROLROOM_OUTPUTS"
DRY_RUN_ENV = "CONTROLROOM_DRY_RUN"
SECRET_QUERY_KEYS = ("password", "sslpassword")
ENTITY_SAFE = ":/@-._~"
"""Characters kept as-is in synthetic lineage entities (`catalog://…`); the rest is %-encoded."""


def entity_uri(scheme: str, name: str) -> str:
    """A single-token lineage entity such as `catalog://nightly%20docs` (no whitespace)."""
    return f"{scheme}://{quote(name, safe=ENTITY_SAFE)}"


def dry_run(spec: dict[str, Any]) -> bool:
    """True when the submission asked for a dry run (nothing may be changed)."""
    return spec.get("dry_run") is True


def dsn_secrets(dsn: str) -> list[str]:
    """The values to scrub from output for `dsn`: its password, as written and decoded."""
    try:
        parts = urlsplit(dsn)
        found = [parts.password or ""]
        found += [v for k, v in parse_qsl(parts.query) if k in SECRET_QUERY_KEYS]
    except ValueError:
        return [dsn]
    return [s for v in found if v for s in {v, unquote(v)}]


@dataclass(frozen=True)
class Resolved:
    """What the job's environment needs for its connections, and what to scrub."""

    env: dict[str, str]
    redact: list[str]
    missing: list[str] = field(default_factory=list)
    """Connections the tenant has not configured (only where they were optional)."""


def describe(uris: Sequence[TableUri], raw: Sequence[str],
             missing: Collection[str] = ()) -> str:
    """JSON the job reads: one object per URI, naming the env var holding its DSN (null where
    the tenant has not configured that connection)."""
    return json.dumps([
        {"uri": text, "connection": u.connection, "schema": u.schema, "table": u.table,
         "entity": u.entity,
         "env": connection_env(u.connection) if u.connection and u.connection not in missing
         else None}
        for u, text in zip(uris, raw, strict=True)
    ])


def spec_uris(spec: dict[str, Any], key: str) -> list[Declared]:
    """What `spec` declares the job reads (`inputs`: the list, or every role but `target`) or
    writes (`outputs`, and the `target` role); PlanError if the shape is neither."""
    try:
        return read(spec) if key == "inputs" else written(spec)
    except DeclarationError as e:
        raise PlanError("invalid_spec", str(e)) from None


def parse_spec_uris(spec: dict[str, Any], key: str, *, table_required: bool) -> list[TableUri]:
    """The URIs of `spec_uris(spec, key)`; PlanError naming the first malformed one."""
    parsed = []
    for item in spec_uris(spec, key):
        try:
            parsed.append(parse_uri(item.uri, table_required=table_required))
        except UriError as e:
            raise PlanError("invalid_uri", f"{item.field}: {e}") from None
    return parsed


def resolve(connections: Connections, tenant_id: str, names: Sequence[str | None], *,
            optional: bool = False) -> Resolved:
    """Each named connection's DSN in its env var; one the tenant lacks is a PlanError, or —
    `optional`, where only the job's own code would use it — left out and listed as missing."""
    env: dict[str, str] = {}
    redact: list[str] = []
    missing: list[str] = []
    owner: dict[str, str] = {}
    for name in dict.fromkeys(n for n in names if n):
        var = connection_env(name)
        if owner.setdefault(var, name) != name:
            raise PlanError("ambiguous_connection",
                            f"connections {owner[var]!r} and {name!r} would share ${var}")
        try:
            dsn = connections.dsn(tenant_id, name)
        except ConnectionNotFoundError:
            if optional:
                missing.append(name)
                continue
            raise PlanError(
                "connection_not_found",
                f"no connection named {name!r} for this tenant; an admin can create it with "
                f"PUT /api/v1/connections/{name}",
            ) from None
        env[var] = dsn
        redact += dsn_secrets(dsn)
    return Resolved(env, redact, missing)
