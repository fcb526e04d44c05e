"""Command handlers for API keys: make a key, record only its hash, show it once."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from uuid import UUID, uuid4

import msgspec

from controlroom.commands.application import ControlRoom
from controlroom.commands.errors import ApiKeyNotFoundError
from controlroom.commands.runs.handlers import Clock, utcnow
from controlroom.commands.updates import existing, update
from controlroom.domain.api_keys import PREFIX, ApiKey, ApiKeyRevokedError

KEY_BYTES = 32


def new_key() -> str:
    """A fresh key: the prefix and 32 random bytes, URL-safe base64."""
    return PREFIX + secrets.token_urlsafe(KEY_BYTES)


class IssuedApiKey(msgspec.Struct, frozen=True):
    """A key just issued: the only place the key itself ever appears."""

    position: int
    id: UUID
    key: str
    name: str
    scopes: list[str]
    last4: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None


class ApiKeyCommands:
    """Every change to a tenant's API keys goes through here."""

    def __init__(self, app: ControlRoom, *, clock: Clock = utcnow,
                 make_key: Callable[[], str] = new_key) -> None:
        self.app = app
        self.clock = clock
        self.make_key = make_key

    def issue(self, tenant_id: str, name: str, scopes: list[str] | None,
              expires_in_days: int | None, by: str) -> IssuedApiKey:
        """A new key for `tenant_id`; InvalidApiKeyError naming a bad field."""
        key = self.make_key()
        api_key = ApiKey.issue(key_id=uuid4(), tenant_id=tenant_id, name=name, scopes=scopes,
                               key=key, by=by, now=self.clock(), expires_in_days=expires_in_days)
        position = self.app.save(api_key)[-1].notification.id
        return IssuedApiKey(position, api_key.id, key, api_key.name, api_key.scopes,
                            api_key.last4, by, api_key.created_at, api_key.expires_at)

    def revoke(self, tenant_id: str, key_id: UUID, by: str) -> int:
        """Revoke a key; ApiKeyNotFoundError if the tenant has no live key `key_id`."""
        def decide(api_key: ApiKey) -> None:
            try:
                api_key.revoke(by=by, now=self.clock())
            except ApiKeyRevokedError:  # also when revoked concurrently: the retry says so
                raise ApiKeyNotFoundError(key_id) from None

        _, position = update(self.app, key_id, decide, load=lambda kid: self._load(tenant_id, kid),
                             name=f"API key {key_id}")
        return position or 0

    def _load(self, tenant_id: str, key_id: UUID) -> ApiKey:
        api_key = existing(self.app, ApiKey, lambda: ApiKeyNotFoundError(key_id))(key_id)
        if api_key.tenant_id != tenant_id:
            raise ApiKeyNotFoundError(key_id)  # another tenant's key is not there
        return api_key
