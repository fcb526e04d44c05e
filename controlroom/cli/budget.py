"""How many PostgreSQL connections a process may hold, and what holds them.

Our users' databases (Supabase among them) allow few connections, so every pool has a fixed
size and the whole is stated at start-up. By default: a `serve` (API, read models and worker)
at most 10, a `worker` 3, a `projector` 4. The sizes are settings (docs/operations.md).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from controlroom.settings import Settings


@dataclass(frozen=True)
class ConnectionBudget:
    """The most connections each part of a process opens."""

    writes: int
    """The write side's pool (the event store)."""
    reads: int
    """The API's asyncpg pool."""
    listen: int
    """The API's LISTEN for read-your-writes and live streams."""
    session: int
    """Advisory locks and wake-ups of the read models and background loops (projections/session.py)."""
    read_models: int
    """The read-model pipeline's reads and writes."""
    operations: int
    """Leases, webhook deliveries, connection lookups."""

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def describe(self) -> str:
        parts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in asdict(self).items() if v)
        return f"at most {self.total} PostgreSQL connections ({parts})"


def connection_budget(settings: Settings, *, api: bool, worker: bool, projections: bool
                      ) -> ConnectionBudget:
    """The budget of a process that runs the API, a worker and/or the read models."""
    # Without Redis, runs queue in the worker's process: it hosts the dispatcher and reaper too.
    hosts = projections or (worker and not settings.redis_url)
    return ConnectionBudget(
        writes=settings.db_write_pool or (2 if api or worker else 1),
        reads=settings.db_read_pool if api else 0,
        listen=1 if api else 0,
        session=1 if hosts else 0,
        read_models=1 if hosts else 0,
        operations=settings.db_operations_pool or (2 if worker and projections else 1),
    )


def name_connections(kind: str) -> str:
    """Name this process's connections in `pg_stat_activity.application_name`: `controlroom-<kind>:<pid>`.

    Through PGAPPNAME, which every libpq connection of the process reads (the API's asyncpg
    pool is given it explicitly); a PGAPPNAME the operator set is kept.
    """
    return os.environ.setdefault("PGAPPNAME", f"controlroom-{kind}:{os.getpid()}")
