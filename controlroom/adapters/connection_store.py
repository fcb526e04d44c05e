"""Tenant connections read from the `connections` read model (DSNs unsealed only on demand)."""

from __future__ import annotations

from typing import Any

import asyncpg
import psycopg
from eventsourcing.utils import get_topic

from controlroom.adapters.read_model_sync import wait_caught_up
from controlroom.commands.connections import DSN_KEY
from controlroom.commands.errors import ConnectionNotFoundError
from controlroom.commands.ports import SecretBox
from controlroom.domain.connection import Connection

CONNECT_TIMEOUT_S = 5
VIEW_COLUMNS = "name, display_dsn, created_at, updated_at, updated_by"
GET_SEALED = "SELECT sealed_dsn FROM connections WHERE tenant_id = %s AND name = %s"
LIST_SYNC = f"SELECT {VIEW_COLUMNS} FROM connections WHERE tenant_id = %s ORDER BY name"
LIST = f"SELECT {VIEW_COLUMNS} FROM connections WHERE tenant_id = $1 ORDER BY name"
GET = f"SELECT {VIEW_COLUMNS} FROM connections WHERE tenant_id = $1 AND name = $2"
TOPICS = [get_topic(Connection.ConnectionSet), get_topic(Connection.ConnectionDeleted)]


class ConnectionStore:
    """The Connections port for workers (blocking; one short connection per lookup).

    A lookup happens once per job attempt, so a pool would mostly hold idle connections.
    """

    def __init__(self, dsn: str, secrets: SecretBox) -> None:
        self._dsn = dsn
        self._secrets = secrets

    def _connect(self) -> psycopg.Connection[Any]:
        # No prepared statements: this also works through a transaction pooler.
        return psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True,
                               prepare_threshold=None)

    def dsn(self, tenant_id: str, name: str) -> str:
        """The plaintext DSN of the tenant's connection `name`."""
        with self._connect() as conn:
            row = conn.execute(GET_SEALED, (tenant_id, name)).fetchone()
        if row is None:
            raise ConnectionNotFoundError(name)
        return self._secrets.unseal(row[0])[DSN_KEY]

    def names(self, tenant_id: str) -> list[str]:
        """Names of the tenant's connections, sorted."""
        return [r[0] for r in self.listing(tenant_id)]

    def listing(self, tenant_id: str) -> list[tuple[Any, ...]]:
        """(name, display_dsn, created_at, updated_at, updated_by) rows, by name."""
        with self._connect() as conn:
            return conn.execute(LIST_SYNC, (tenant_id,)).fetchall()

    def wait_caught_up(self, timeout_s: float) -> bool:
        """True once the connections read model reflects every connection event."""
        with self._connect() as conn:
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
