"""Postgres connection details: eventsourcing env, asyncpg pools, schema migrations at start."""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import psycopg
from psycopg_pool import ConnectionPool

from controlroom.adapters.postgres import migrations
from controlroom.adapters.postgres.event_store import STATEMENT_TIMEOUT_KEY, STATEMENT_TIMEOUT_S

log = logging.getLogger("controlroom.migrations")

READ_POOL_MIN = 1
COMMAND_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
WRITE_POOL_SIZE = 2
OPERATIONS_IDLE_S = 600.0
TRANSACTION_POOLER_PORT = 6543
"""Supabase's transaction pooler: no prepared statements survive across transactions."""


def behind_transaction_pooler(dsn: str, declared: bool = False) -> bool:
    """True when told so, or for Supabase's transaction-pooler port."""
    return declared or urlsplit(dsn).port == TRANSACTION_POOLER_PORT


def eventsourcing_env(
    dsn: str, *, pool_size: int = WRITE_POOL_SIZE, pooler: bool = False, cache: int = 0,
) -> dict[str, str]:
    """The eventsourcing library's POSTGRES_* settings for a DSN: the write side's pool.

    Never more than `pool_size` connections: appends serialise on the log's lock anyway, so
    more would only wait there, holding connections the database has few of.

    With a `cache`, the last `cache` aggregates used stay in memory; each use reads only the
    events appended since (by any process), instead of the latest snapshot and the events after
    it: one short query instead of two and a replay.
    """
    parts = urlsplit(dsn)
    return {
        "PERSISTENCE_MODULE": (
            "controlroom.adapters.postgres.pooler_factory:TransactionPoolerFactory"
            if behind_transaction_pooler(dsn, pooler)
            else "controlroom.adapters.postgres.event_store:EventStoreFactory"
        ),
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_CONNECT_TIMEOUT": str(int(CONNECT_TIMEOUT_S)),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "0",
        # No pre-ping round trip per transaction: the recorders retry on a dropped connection.
        "POSTGRES_PRE_PING": "n",
        # The write side's statements are short; one that isn't is cut by the server.
        STATEMENT_TIMEOUT_KEY: str(int(STATEMENT_TIMEOUT_S * 1000)),
        **({"AGGREGATE_CACHE_MAXSIZE": str(cache), "AGGREGATE_CACHE_FASTFORWARD": "y"}
           if cache > 0 else {}),
    }


def redact(dsn: str) -> str:
    """The DSN with its password masked, for logs and errors."""
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def schema_connection(dsn: str) -> psycopg.Connection[Any]:
    """A connection for migrations: autocommit (each runs in a transaction of its own), and no
    prepared statements, so that it also works through a transaction pooler."""
    return psycopg.connect(dsn, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S),
                           prepare_threshold=None)


def apply_schema(dsn: str, report: migrations.Report | None = None) -> list[migrations.Migration]:
    """Bring the database's schema up to date: apply the migrations it lacks, in order
    (controlroom/migrations/; see migrations.upgrade). Every process does it at start.

    Once they are all applied, this is one query and takes no lock.
    """
    with schema_connection(dsn) as conn:
        return migrations.upgrade(conn, migrations.available(), report or _log_migration)


def _log_migration(migration: migrations.Migration, how: str, seconds: float) -> None:
    log.info("schema: migration %s %s (%.2f s)", migration.filename, how, seconds)


async def _keep_session(_: Any) -> None:
    """Read handlers never change session state, so skip asyncpg's reset on release."""


async def create_read_pool(dsn: str, size: int, *, pooler: bool = False) -> asyncpg.Pool:
    """The API's asyncpg pool of at most `size` (no statement cache behind a transaction pooler)."""
    return await asyncpg.create_pool(
        dsn,
        min_size=min(READ_POOL_MIN, size),
        max_size=size,
        command_timeout=COMMAND_TIMEOUT_S,
        timeout=CONNECT_TIMEOUT_S,
        reset=_keep_session,
        statement_cache_size=0 if behind_transaction_pooler(dsn, pooler) else 100,
        server_settings=application_name(),
    )


def application_name() -> dict[str, str]:
    """The process's connection name (PGAPPNAME, which libpq reads and asyncpg does not)."""
    name = os.environ.get("PGAPPNAME")
    return {"application_name": name} if name else {}


def operations_pool(dsn: str, size: int, *, pooler: bool = False) -> ConnectionPool:
    """The process's pool for short blocking statements: leases, webhook deliveries, lookups.

    A connection the database dropped (a restart) is replaced before it is handed out, so
    everyone using the pool recovers by themselves.
    """
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT_S)}
    if behind_transaction_pooler(dsn, pooler):
        kwargs["prepare_threshold"] = None
    return ConnectionPool(dsn, min_size=0, max_size=size, kwargs=kwargs, timeout=CONNECT_TIMEOUT_S,
                          max_idle=OPERATIONS_IDLE_S, open=True, name="operations",
                          check=ConnectionPool.check_connection)
