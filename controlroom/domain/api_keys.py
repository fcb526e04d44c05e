"""The ApiKey aggregate: a tenant's credential for headless clients, known only by its hash.

The key itself (`cr_…`) is made at the edge, shown once, and never enters an event: the
aggregate records its SHA-256 and its last four characters (for people to tell keys apart).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from controlroom.domain.errors import DomainError
from controlroom.domain.scopes import ALL_SCOPES, DEFAULT_SCOPES

PREFIX = "cr_"
MAX_NAME_CHARS = 100
MAX_EXPIRES_IN_DAYS = 3650


class InvalidApiKeyError(DomainError):
    """An API key request that can't be accepted; names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ApiKeyRevokedError(DomainError):
    """The key was revoked already."""


def key_hash(key: str) -> str:
    """What is stored of a key: its SHA-256, hex (keys are random, so no salt or stretching)."""
    return hashlib.sha256(key.encode()).hexdigest()


def check_name(name: str) -> str:
    """`name`, stripped, if it is a usable key name."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise InvalidApiKeyError("name", f"must be 1 to {MAX_NAME_CHARS} printable characters")
    return name


def check_scopes(scopes: list[str] | None) -> tuple[str, ...]:
    """The scopes, de-duplicated in order (the defaults if none are given)."""
    if scopes is None:
        return DEFAULT_SCOPES
    if not scopes:
        raise InvalidApiKeyError("scopes", "must name at least one scope")
    for i, scope in enumerate(scopes):
        if scope not in ALL_SCOPES:
            raise InvalidApiKeyError(f"scopes[{i}]", f"unknown scope {scope!r}; one of "
                                     + ", ".join(ALL_SCOPES))
    return tuple(dict.fromkeys(scopes))


def expiry(now: datetime, expires_in_days: int | None) -> datetime | None:
    """When a key made at `now` expires (None: never)."""
    if expires_in_days is None:
        return None
    if not 1 <= expires_in_days <= MAX_EXPIRES_IN_DAYS:
        raise InvalidApiKeyError("expires_in_days", f"must be from 1 to {MAX_EXPIRES_IN_DAYS}")
    return now + timedelta(days=expires_in_days)


class ApiKey(Aggregate):
    """One API key of a tenant: issued once, revoked at most once."""

    class ApiKeyIssued(Aggregate.Created):
        tenant_id: str
        name: str
        scopes: list[str]
        key_hash: str
        last4: str
        created_by: str
        created_at: datetime
        expires_at: datetime | None

    def __init__(self, tenant_id: str, name: str, scopes: list[str], key_hash: str, last4: str,
                 created_by: str, created_at: datetime, expires_at: datetime | None) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.scopes = scopes
        self.key_hash = key_hash
        self.last4 = last4
        self.created_by = created_by
        self.created_at = created_at
        self.expires_at = expires_at
        self.revoked_at: datetime | None = None

    @classmethod
    def issue(cls, *, key_id: UUID, tenant_id: str, name: str, scopes: list[str] | None,
              key: str, by: str, now: datetime, expires_in_days: int | None = None) -> ApiKey:
        """A new key of `tenant_id`; `key` is only hashed, never kept."""
        if not key.startswith(PREFIX):
            raise InvalidApiKeyError("key", f"must start with {PREFIX!r}")
        return cls._create(
            cls.ApiKeyIssued, id=key_id, tenant_id=tenant_id, name=check_name(name),
            scopes=list(check_scopes(scopes)), key_hash=key_hash(key), last4=key[-4:],
            created_by=by, created_at=now, expires_at=expiry(now, expires_in_days),
        )

    def revoke(self, *, by: str, now: datetime) -> None:
        """Stop the key from working; ApiKeyRevokedError if it was revoked already."""
        if self.revoked_at is not None:
            raise ApiKeyRevokedError(f"API key {self.id} was revoked already")
        self._revoked(tenant_id=self.tenant_id, by=by, at=now)

    @event("ApiKeyRevoked")
    def _revoked(self, tenant_id: str, by: str, at: datetime) -> None:
        self.revoked_at = at

    if TYPE_CHECKING:
        # Each `@event("...")` method above defines its event class when this class is made,
        # with the method's parameters as its fields. Declared again here, field for field
        # (tests/unit/test_event_declarations.py holds the two together), for type checking.
        class ApiKeyRevoked(Aggregate.Event):
            tenant_id: str
            by: str
            at: datetime
