"""What the API needs from the composition root, behind small protocols."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from controlroom.api.api_key_auth import ApiKeyDeps
from controlroom.api.event_ports import EventStreams
from controlroom.api.problems import is_unavailable
from controlroom.api.webhook_deps import WebhookDeps
from controlroom.commands.connections import ConnectionCommands
from controlroom.commands.handlers import RunCommands
from controlroom.commands.lineage import LineageCommands
from controlroom.commands.ports import ArtifactStore
from controlroom.validation import Preflight

log = logging.getLogger("controlroom.api")
T = TypeVar("T")

RUN_STATUS = "run_status"
CONNECTIONS = "connections"
API_KEYS = "api_keys"
WRITE_DEADLINE_S = 8.0
"""A write not done by then is reported as 503; Idempotency-Key makes the retry safe."""
BREAKER_COOLDOWN_S = 5.0
PROBE_TIMEOUT_S = 1.0
DEFAULT_MAX_ARTIFACT_BYTES = 1024**3


class DatabaseUnavailableError(ConnectionError):
    """The database can't take writes right now."""


class Record(Protocol):
    def __getitem__(self, key: str) -> Any: ...


class RunReadsPort(Protocol):
    """Tenant-scoped queries of the run read models."""

    async def get(self, tenant_id: str, run_id: UUID) -> Record | None: ...

    async def list(
        self, tenant_id: str, *, status: str | None, job_type: str | None,
        created_by: str | None, before: tuple[datetime, UUID] | None, limit: int,
    ) -> Sequence[Record]: ...

    async def log(self, tenant_id: str, run_id: UUID) -> Sequence[Record] | None: ...

    async def artifact(self, tenant_id: str, artifact_id: UUID) -> Record | None: ...

    async def ping(self) -> None: ...


class ConnectionReadsPort(Protocol):
    """Tenant-scoped queries of the connections read model (display forms only)."""

    async def list(self, tenant_id: str) -> Sequence[Record]: ...

    async def get(self, tenant_id: str, name: str) -> Record | None: ...


class LineageReadsPort(Protocol):
    """Walks of a tenant's lineage graph (None: the entity was never recorded)."""

    async def query(
        self, tenant_id: str, entity: str, *, direction: Any, depth: int, as_of: float | None,
        max_nodes: int, max_edges: int,
    ) -> Any: ...


class WaiterPort(Protocol):
    """Waits for a projection to apply a log position."""

    async def wait(self, name: str, position: int, timeout: float) -> bool: ...


class Deps:
    """The write side (sync, run in threads) and the read side (async) for handlers."""

    def __init__(
        self, commands: RunCommands, reads: RunReadsPort, waiter: WaiterPort,
        *, write_threads: int, settle_timeout_s: float, artifacts: ArtifactStore | None = None,
        connections: ConnectionCommands | None = None,
        connection_reads: ConnectionReadsPort | None = None,
        preflight: Preflight | None = None, events: EventStreams | None = None,
        lineage: LineageReadsPort | None = None, lineage_commands: LineageCommands | None = None,
        max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
        webhooks: WebhookDeps | None = None, api_keys: ApiKeyDeps | None = None,
    ) -> None:
        self.commands = commands
        self.reads = reads
        self.waiter = waiter
        self.artifacts = artifacts
        self.connections = connections
        self.connection_reads = connection_reads
        self._preflight = preflight
        self.events = events
        self.lineage = lineage
        self.lineage_commands = lineage_commands
        self.max_artifact_bytes = max_artifact_bytes
        self.webhooks = webhooks
        self.api_keys = api_keys
        self.settle_timeout_s = settle_timeout_s
        self._pool = ThreadPoolExecutor(write_threads, thread_name_prefix="controlroom-write")
        self._broken_until = 0.0

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a (blocking) command handler off the event loop, failing fast if the DB is away.

        The event store's driver retries for tens of seconds when the database is gone; after
        one such failure, writes first probe the database (cheaply) until it answers again.
        """
        loop = asyncio.get_running_loop()
        if self._broken_until > loop.time():
            try:
                await asyncio.wait_for(self.reads.ping(), PROBE_TIMEOUT_S)
            except Exception:
                raise DatabaseUnavailableError("the database is unreachable") from None
            self._broken_until = 0.0
        future = loop.run_in_executor(self._pool, fn, *args)
        try:
            return await asyncio.wait_for(asyncio.shield(future), WRITE_DEADLINE_S)
        except TimeoutError:
            self._broken_until = loop.time() + BREAKER_COOLDOWN_S
            raise DatabaseUnavailableError("the database did not answer in time") from None
        except Exception as e:
            if is_unavailable(e):
                self._broken_until = loop.time() + BREAKER_COOLDOWN_S
            raise

    async def settle(self, position: int, projection: str = RUN_STATUS) -> None:
        """Read-your-writes: return once `projection` shows `position` (or after a timeout)."""
        if not await self.waiter.wait(projection, position, self.settle_timeout_s):
            log.warning("%s had not reached position %s after %.1fs", projection, position,
                        self.settle_timeout_s)

    @property
    def preflight(self) -> Preflight:
        """Pre-flight validation; the composition root must wire one (submit relies on it)."""
        if self._preflight is None:
            raise RuntimeError("no Preflight was given to Deps")
        return self._preflight

    def close(self) -> None:
        """Stop the write threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
