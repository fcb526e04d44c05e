"""The Connection aggregate: a tenant's named database connection (its DSN only ever sealed).

A connection's id derives from (tenant, name), so setting one is an upsert. The plaintext
DSN never enters an event: the write side seals it first and passes a redacted display
form (`postgresql://user:***@host:5432/db`) for listings.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from controlroom.domain.errors import DomainError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
DSN_SCHEMES = ("postgres", "postgresql")
MAX_DSN_CHARS = 4096
MASK = "***"
SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})
"""libpq URI parameters that carry secrets too, not only the userinfo part."""


class InvalidConnectionError(DomainError):
    """A connection name or DSN that can't be accepted; names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def connection_id(tenant_id: str, name: str) -> UUID:
    """The id of a tenant's connection `name` (names can't hold ':', so it's unambiguous)."""
    return uuid5(NAMESPACE_URL, f"controlroom:connection:{tenant_id}:{name}")


def check_name(name: str) -> str:
    """`name` if it is a valid connection name."""
    if not NAME_PATTERN.match(name):
        raise InvalidConnectionError(
            "name", "must match [a-z][a-z0-9_-]{0,62} (lower case, starting with a letter)"
        )
    return name


def display_form(dsn: str) -> str:
    """The DSN with every secret masked; InvalidConnectionError (never echoing it) if unusable."""
    if len(dsn) > MAX_DSN_CHARS or not dsn.isprintable():
        raise InvalidConnectionError("dsn", f"must be printable and at most {MAX_DSN_CHARS} characters")
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InvalidConnectionError("dsn", "is not a valid URL") from None
    if parts.scheme not in DSN_SCHEMES or (not parts.netloc and not parts.query):
        raise InvalidConnectionError(
            "dsn", "must be a postgresql://user:password@host:port/dbname URL (postgres:// also accepted)"
        )
    host = parts.netloc.rpartition("@")[2]
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    user, colon, _ = userinfo.partition(":")
    netloc = f"{user}{':' + MASK if colon else ''}@{host}" if userinfo else host
    params = parse_qsl(parts.query, keep_blank_values=True)
    query = parts.query
    if any(k in SECRET_QUERY_KEYS for k, _ in params):
        query = urlencode([(k, MASK if k in SECRET_QUERY_KEYS else v) for k, v in params], safe="*/:")
    return parts._replace(netloc=netloc, query=query, fragment="").geturl()


class Connection(Aggregate):
    """A named DSN of one tenant; deleted connections can be set again."""

    class ConnectionCreated(Aggregate.Created):
        tenant_id: str
        name: str

    def __init__(self, tenant_id: str, name: str) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.sealed_dsn: str | None = None
        self.display_dsn: str | None = None
        self.created_at: datetime | None = None
        self.updated_at: datetime | None = None
        self.updated_by: str | None = None

    @classmethod
    def create(cls, tenant_id: str, name: str) -> Connection:
        """A new, not yet set connection of `tenant_id` called `name`."""
        return cls._create(
            cls.ConnectionCreated, id=connection_id(tenant_id, check_name(name)),
            tenant_id=tenant_id, name=name,
        )

    @property
    def exists(self) -> bool:
        """True while the connection is set (not new, not deleted)."""
        return self.sealed_dsn is not None

    def set(self, *, sealed_dsn: str, display_dsn: str, by: str, now: datetime) -> None:
        """Point the connection at a (sealed) DSN."""
        created_at = self.created_at if self.exists and self.created_at else now
        self._set(tenant_id=self.tenant_id, name=self.name, sealed_dsn=sealed_dsn,
                  display_dsn=display_dsn, created_at=created_at, by=by, at=now)

    def delete(self, *, by: str, now: datetime) -> None:
        """Remove the connection; InvalidConnectionError if it isn't set."""
        if not self.exists:
            raise InvalidConnectionError("name", f"connection {self.name!r} is not set")
        self._deleted(tenant_id=self.tenant_id, name=self.name, by=by, at=now)

    @event("ConnectionSet")
    def _set(self, tenant_id: str, name: str, sealed_dsn: str, display_dsn: str,
             created_at: datetime, by: str, at: datetime) -> None:
        self.sealed_dsn = sealed_dsn
        self.display_dsn = display_dsn
        self.created_at = created_at
        self.updated_at = at
        self.updated_by = by

    @event("ConnectionDeleted")
    def _deleted(self, tenant_id: str, name: str, by: str, at: datetime) -> None:
        self.sealed_dsn = None
        self.display_dsn = None
        self.created_at = None
        self.updated_at = at
        self.updated_by = by

    if TYPE_CHECKING:
        # Each `@event("...")` method above defines its event class when this class is made,
        # with the method's parameters as its fields. Declared again here, field for field
        # (tests/unit/test_event_declarations.py holds the two together), for type checking.
        class ConnectionSet(Aggregate.Event):
            tenant_id: str
            name: str
            sealed_dsn: str
            display_dsn: str
            created_at: datetime
            by: str
            at: datetime

        class ConnectionDeleted(Aggregate.Event):
            tenant_id: str
            name: str
            by: str
            at: datetime
