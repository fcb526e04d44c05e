"""Resolving `spec.inputs` / `spec.outputs` table URIs through the tenant's connections.

Grammar (shared with pre-flight validation, controlroom/validation/uris.py):
`[<connection>://]<schema>[.<table>]` — the scheme *is* the connection's name. A job gets
each connection's DSN in `CONTROLROOM_CONNECTION_<NAME>` and the parsed URIs as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from controlroom.commands.errors import ConnectionNotFoundError
from controlroom.commands.ports import Connections, PlanError
from controlroom.validation.uris import TableUri, UriError, parse_uri

CONNECTION_ENV_PREFIX = "CONTROLROOM_CONNECTION_"
INPUTS_ENV = "CONTROLROOM_INPUTS"
OUTPUTS_ENV = "CONTROLROOM_OUTPUTS"
DRY_RUN_ENV = "CONTROLROOM_DRY_RUN"
SECRET_QUERY_KEYS = ("password", "sslpassword")
ENTITY_SAFE = ":/@-._~"
"""Characters kept as-is in synthetic lineage entities (`catalog://…`); the rest is %-encoded."""


def connection_env(name: str) -> str:
    """The environment variable holding connection `name`'s DSN."""
    return CONNECTION_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


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


def describe(uris: Sequence[TableUri], raw: Sequence[str]) -> str:
    """JSON the job reads: one object per URI, naming the env var holding its DSN."""
    return json.dumps([
        {"uri": text, "connection": u.connection, "schema": u.schema, "table": u.table,
         "entity": u.entity, "env": connection_env(u.connection) if u.connection else None}
        for u, text in zip(uris, raw, strict=True)
    ])


def parse_spec_uris(spec: dict[str, Any], key: str, *, table_required: bool) -> list[TableUri]:
    """The URIs of `spec[key]`; PlanError naming the first malformed one."""
    values = spec.get(key) or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise PlanError("invalid_spec", f"spec.{key} must be a list of table URIs")
    parsed = []
    for i, text in enumerate(values):
        try:
            parsed.append(parse_uri(text, table_required=table_required))
        except UriError as e:
            raise PlanError("invalid_uri", f"spec.{key}[{i}]: {e}") from None
    return parsed


def resolve(connections: Connections, tenant_id: str, names: Sequence[str | None]) -> Resolved:
    """Each named connection's DSN in its env var; PlanError if the tenant lacks one."""
    env: dict[str, str] = {}
    redact: list[str] = []
    owner: dict[str, str] = {}
    for name in dict.fromkeys(n for n in names if n):
        var = connection_env(name)
        if owner.setdefault(var, name) != name:
            raise PlanError("ambiguous_connection",
                            f"connections {owner[var]!r} and {name!r} would share ${var}")
        try:
            dsn = connections.dsn(tenant_id, name)
        except ConnectionNotFoundError:
            raise PlanError(
                "connection_not_found",
                f"no connection named {name!r} for this tenant; an admin can create it with "
                f"PUT /api/v1/connections/{name}",
            ) from None
        env[var] = dsn
        redact += dsn_secrets(dsn)
    return Resolved(env, redact)
