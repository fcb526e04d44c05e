"""What the API needs from the composition root, behind small protocols."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from controlroom.commands.handlers import RunCommands

log = logging.getLogger("controlroom.api")
T = TypeVar("T")

RUN_STATUS = "run_status"


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

    async def ping(self) -> None: ...


class WaiterPort(Protocol):
    """Waits for a projection to apply a log position."""

    async def wait(self, name: str, position: int, timeout: float) -> bool: ...


class Deps:
    """The write side (sync, run in threads) and the read side (async) for handlers."""

    def __init__(
        self, commands: RunCommands, reads: RunReadsPort, waiter: WaiterPort,
        *, write_threads: int, settle_timeout_s: float,
    ) -> None:
        self.commands = commands
        self.reads = reads
        self.waiter = waiter
        self.settle_timeout_s = settle_timeout_s
        self._pool = ThreadPoolExecutor(write_threads, thread_name_prefix="controlroom-write")

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a (blocking) command handler off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def settle(self, position: int) -> None:
        """Read-your-writes: return once run_status shows `position` (or after a timeout)."""
        if not await self.waiter.wait(RUN_STATUS, position, self.settle_timeout_s):
            log.warning("run_status had not reached position %s after %.1fs", position,
                        self.settle_timeout_s)

    def close(self) -> None:
        """Stop the write threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
