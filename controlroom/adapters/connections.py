"""Tenant connections read from the `connections` read model (DSNs unsealed only on demand)."""

from __future__ import annotations

from typing import Any

import asyncpg
from eventsourcing.utils import get_topic
from psycopg_pool import ConnectionPool

from controlroom.adapters.postgres.read_model_sync import wait_caught_up
from controlroom.commands.connections import DSN_KEY
from controlroom.commands.errors import ConnectionNotFoundError
from controlroom.commands.ports import SecretBox
from controlroom.domain.connections import Connection

VIEW_COLUMNS = "name, display_dsn, created_at, updated_at, updated_by"
GET_SEALED = "SELECT sealed_dsn FROM connections WHERE tenant_id = %s AND name = %s"
LIST_SYNC = f"SELECT {VIEW_COLUMNS} FROM connections WHERE tenant_id = %s ORDER BY name"
LIST = f"SELECT {VIEW_COLUMNS} FROM connections WHERE tenant_id = $1 ORDER BY name"
GET = f"SELECT {VIEW_COLUMNS} FROM connections WHERE tenant_id = $1 AND name = $2"
TOPICS = [get_topic(Connection.ConnectionSet), get_topic(Connection.ConnectionDeleted)]


class ConnectionStore:
    """The Connections port for workers (blocking; on the process's operations pool)."""

    def __init__(self, pool: ConnectionPool, secrets: SecretBox) -> None:
        self._pool = pool
        self._secrets = secrets

    def dsn(self, tenant_id: str, name: str) -> str:
        """The plaintext DSN of the tenant's connection `name`."""
        with self._pool.connection() as conn:
            row = conn.execute(GET_SEALED, (tenant_id, name)).fetchone()
        if row is None:
            raise ConnectionNotFoundError(name)
        return self._secrets.unseal(row[0])[DSN_KEY]

    def names(self, tenant_id: str) -> list[str]:
        """Names of the tenant's connections, sorted."""
        return [r[0] for r in self.listing(tenant_id)]

    def listing(self, tenant_id: str) -> list[tuple[Any, ...]]:
        """(name, display_dsn, created_at, updated_at, updated_by) rows, by name."""
        with self._pool.connection() as conn:
            return conn.execute(LIST_SYNC, (tenant_id,)).fetchall()

    def wait_caught_up(self, timeout_s: float) -> bool:
        """True once the connections read model reflects every connection event."""
        with self._pool.connection() as conn:
            return wait_caught_up(conn, "connections", TOPICS, timeout_s)


class ConnectionReads:
    """Tenant-scoped async reads for the API; another tenant's connection is not there."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list(self, tenant_id: str) -> list[asyncpg.Record]:
        """The tenant's connections by name (display form only)."""
        return await self.pool.fetch(LIST, tenant_id)

    async def get(self, tenant_id: str, name: str) -> asyncpg.Record | None:
        """One connection (display form only)."""
        return await self.pool.fetchrow(GET, tenant_id, name)
