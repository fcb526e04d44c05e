"""API keys read from the `api_keys` read model: async for the API, blocking for the CLI."""

from __future__ import annotations

from typing import Any

import asyncpg
import psycopg
from eventsourcing.utils import get_topic

from controlroom.adapters.postgres.read_model_sync import wait_caught_up
from controlroom.domain.api_keys import ApiKey

CONNECT_TIMEOUT_S = 5
VIEW_COLUMNS = "id, name, scopes, last4, created_by, created_at, expires_at"
LIST = (f"SELECT {VIEW_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL "
        "ORDER BY created_at, id")
LIST_SYNC = LIST.replace("$1", "%s")
BY_HASH = ("SELECT id, tenant_id, scopes, expires_at FROM api_keys "
           "WHERE key_hash = $1 AND revoked_at IS NULL")
TOPICS = [get_topic(ApiKey.ApiKeyIssued), get_topic(ApiKey.ApiKeyRevoked)]


class ApiKeyReads:
    """Async reads for the API: a tenant's live keys, and the live key with a given hash."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list(self, tenant_id: str) -> list[asyncpg.Record]:
        """The tenant's unrevoked keys, oldest first (never a hash)."""
        return await self.pool.fetch(LIST, tenant_id)

    async def by_hash(self, key_hash: str) -> asyncpg.Record | None:
        """(id, tenant_id, scopes, expires_at) of the unrevoked key with this hash."""
        return await self.pool.fetchrow(BY_HASH, key_hash)


class ApiKeyStore:
    """Blocking reads for the operator CLI (one short connection each)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True,
                               prepare_threshold=None)

    def listing(self, tenant_id: str) -> list[tuple[Any, ...]]:
        """(id, name, scopes, last4, created_by, created_at, expires_at) of live keys."""
        with self._connect() as conn:
            return conn.execute(LIST_SYNC, (tenant_id,)).fetchall()

    def wait_caught_up(self, timeout_s: float) -> bool:
        """True once the api_keys read model reflects every API key event."""
        with self._connect() as conn:
            return wait_caught_up(conn, "api_keys", TOPICS, timeout_s)
