"""What the API needs from the composition root, behind small protocols."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from controlroom.api.api_keys.auth import ApiKeyDeps
from controlroom.api.events.ports import EventStreams
from controlroom.api.problems import is_unavailable
from controlroom.api.webhooks.deps import WebhookDeps
from controlroom.api.write_pool import DaemonThreadPool
from controlroom.commands.connections import ConnectionCommands
from controlroom.commands.errors import RunNotFoundError
from controlroom.commands.lineage import LineageCommands
from controlroom.commands.ports import ArtifactStore
from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.runs.run import Run
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

    async def artifacts(
        self, tenant_id: str, *, run_id: UUID | None, path_prefix: str | None,
        before: int | None, limit: int,
    ) -> Sequence[Record]: ...

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
        self._pool = DaemonThreadPool(write_threads, "controlroom-write")
        self._broken_until = 0.0
        self._write_failure: str | None = None
        """Why the last write failed (timed out, database away); None once one succeeds."""

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a (blocking) command handler off the event loop, failing fast if writes can't go.

        After a write timed out or found the database away, writes first probe the write path
        (can an append take the log's lock now?) until it answers again.
        """
        loop = asyncio.get_running_loop()
        if self._broken_until > loop.time() and await self._probe() is not None:
            raise DatabaseUnavailableError("the database can't take writes right now")
        future = loop.run_in_executor(self._pool, fn, *args)
        try:
            result = await asyncio.wait_for(asyncio.shield(future), WRITE_DEADLINE_S)
        except TimeoutError:
            self._failed(loop, "a write timed out")
            raise DatabaseUnavailableError("the database did not answer in time") from None
        except Exception as e:
            if is_unavailable(e):
                self._failed(loop, f"a write failed: {type(e).__name__}")
            raise
        self._write_failure = None
        return result

    def _failed(self, loop: asyncio.AbstractEventLoop, why: str) -> None:
        self._broken_until = loop.time() + BREAKER_COOLDOWN_S
        self._write_failure = why

    async def _probe(self) -> str | None:
        """None if an append could take the log's lock now (and the breaker closes)."""
        future = asyncio.get_running_loop().run_in_executor(self._pool, self.commands.probe)
        try:
            await asyncio.wait_for(future, PROBE_TIMEOUT_S)
        except Exception as e:
            return f"{self._write_failure or 'writes fail'}; probe: {type(e).__name__}"
        self._broken_until = 0.0
        self._write_failure = None
        return None

    async def write_health(self) -> str | None:
        """None while writes go through; else why not (probing once the last write failed)."""
        if self._write_failure is None:
            return None
        return await self._probe()

    async def settle(self, position: int, projection: str = RUN_STATUS) -> bool:
        """Read-your-writes: True once `projection` shows `position`, False after the timeout
        (the write is durable all the same; callers say it isn't visible yet)."""
        if await self.waiter.wait(projection, position, self.settle_timeout_s):
            return True
        log.warning("%s had not reached position %s after %.1fs", projection, position,
                    self.settle_timeout_s)
        return False

    async def run_from_log(self, tenant_id: str, run_id: UUID) -> Run | None:
        """The run straight from the log, if it is this tenant's (None otherwise, as for a run
        that doesn't exist: another tenant's ids are never confirmed)."""
        try:
            run = await self.write(self.commands.load, run_id)
        except RunNotFoundError:
            return None
        return run if run.tenant_id == tenant_id else None

    @property
    def preflight(self) -> Preflight:
        """Pre-flight validation; the composition root must wire one (submit relies on it)."""
        if self._preflight is None:
            raise RuntimeError("no Preflight was given to Deps")
        return self._preflight

    def close(self) -> None:
        """Stop the write threads (never waiting for one stuck in the database)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
