"""Table URIs in `spec.inputs` / `spec.outputs`: `[<connection>://]<schema>[.<table>]`.

`supabase://public.orders` names table `public.orders` reached through the tenant's
connection `supabase`; a bare `public.orders` names the entity only (lineage, no
connection). Identifiers follow PostgreSQL: unquoted ones fold to lower case, double
quotes keep case and may hold anything (`""` is a quote). DSNs are not URIs here: they
contain credentials and belong in a named connection. Error messages never echo the
text (it might be a DSN with a password).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONNECTION_ENV_PREFIX = "CONTROLROOM_CONNECTION_"
MAX_IDENTIFIER_BYTES = 63
"""PostgreSQL's NAMEDATALEN - 1; longer names are silently truncated by the server."""
GRAMMAR = "[<connection>://]<schema>.<table>"

_IDENT = r'(?:[^\W\d][\w$]*|"(?:[^"]|"")+")'
_BARE = re.compile(r"[^\W\d][\w$]*")
_URI = re.compile(
    rf"(?:(?P<connection>[A-Za-z][A-Za-z0-9_+.-]*)://)?(?P<schema>{_IDENT})(?:\.(?P<table>{_IDENT}))?"
)


class UriError(ValueError):
    """A URI that does not follow the grammar; the message says why without echoing it."""


@dataclass(frozen=True)
class TableUri:
    """A parsed table (or schema) URI."""

    connection: str | None
    schema: str
    table: str | None

    @property
    def entity(self) -> str:
        """`schema.table` (or `schema`), as lineage names it."""
        return f"{self.schema}.{self.table}" if self.table is not None else self.schema

    @property
    def uri(self) -> str:
        """The URI text that parses back to this one: lineage keeps its connection as namespace."""
        names = ".".join(quote_identifier(n) for n in (self.schema, self.table) if n is not None)
        return f"{self.connection}://{names}" if self.connection else names


def quote_identifier(name: str) -> str:
    """`name` as a URI writes it: bare where it reads back unchanged, else double-quoted."""
    if _BARE.fullmatch(name) and name == name.lower():
        return name
    return '"' + name.replace('"', '""') + '"'


def connection_env(name: str) -> str:
    """The environment variable a job finds connection `name`'s DSN in."""
    return CONNECTION_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


def _identifier(token: str) -> str:
    name = token[1:-1].replace('""', '"') if token.startswith('"') else token.lower()
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise UriError(f"identifier longer than {MAX_IDENTIFIER_BYTES} bytes")
    return name


def parse_uri(text: str, *, table_required: bool = True) -> TableUri:
    """The TableUri `text` names; UriError if it is malformed."""
    m = _URI.fullmatch(text)
    if m is None:
        if "@" in text or "/" in text.partition("://")[2]:
            raise UriError(f"expected {GRAMMAR}; DSNs belong in a named connection, not in a job")
        raise UriError(f"expected {GRAMMAR}")
    if table_required and m["table"] is None:
        raise UriError(f"expected {GRAMMAR}: the table is missing")
    table = _identifier(m["table"]) if m["table"] is not None else None
    return TableUri(m["connection"], _identifier(m["schema"]), table)


def lineage_entity(text: str) -> tuple[str, str | None]:
    """(entity, namespace) that lineage keys a name by.

    A table URI names entity `schema.table` in the namespace of its connection
    (`supabase://public.orders` → `public.orders`, `supabase`), so either form finds the
    same node. Anything else (`catalog://docs`, `s3://bucket/key`) is kept whole, its scheme
    as namespace: it names no table, and folding it could merge unrelated things.
    """
    text = text.strip()
    try:
        uri = parse_uri(text)
    except UriError:
        scheme, sep, _ = text.partition("://")
        return text, (scheme if sep and scheme else None)
    return uri.entity, uri.connection


__all__ = ["GRAMMAR", "TableUri", "UriError", "lineage_entity", "parse_uri", "quote_identifier"]
