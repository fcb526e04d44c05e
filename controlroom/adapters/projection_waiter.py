"""Read-your-writes: wait until a projection has applied a position (LISTEN + polling)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from controlroom.projections.view import PROJECTED_CHANNEL

log = logging.getLogger("controlroom.waiter")

POLL_INTERVAL_S = 0.25
"""Fallback when a notification is missed (e.g. while the listener reconnects)."""
POOLER_POLL_INTERVAL_S = 0.02
"""Behind a transaction pooler LISTEN can't work: polling is the only way."""
APPLICATION_NAME = "controlroom"


class ProjectionWaiter:
    """One LISTEN connection per process, fanned out to every waiting request."""

    def __init__(self, dsn: str, pool: asyncpg.Pool, *, listen: bool = True) -> None:
        self.dsn = dsn
        self.pool = pool
        self.listen = listen
        self.poll_interval = POLL_INTERVAL_S if listen else POOLER_POLL_INTERVAL_S
        self.positions: dict[str, int] = {}
        self.resets: dict[str, int] = {}
        """How often each projection was seen to start over (a rebuild): holders of state reload."""
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self._conn: asyncpg.Connection | None = None

    async def start(self) -> None:
        """Open the listener; waiting still works (by polling) if it can't."""
        if not self.listen:
            return
        try:
            self._conn = await asyncpg.connect(self.dsn, timeout=5)
            await self._conn.add_listener(PROJECTED_CHANNEL, self._on_notify)
        except (TimeoutError, OSError, asyncpg.PostgresError) as e:
            log.warning("LISTEN unavailable, falling back to polling: %s", e)
            self._conn = None

    async def stop(self) -> None:
        """Close the listener."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        name, _, position = payload.rpartition(":")
        if position == "0":
            self._reset(name)
        else:
            self._advance(name, int(position))

    def _reset(self, name: str) -> None:
        """A rebuild emptied the projection: it has applied nothing until it says otherwise."""
        self.positions[name] = 0
        self.resets[name] = self.resets.get(name, 0) + 1

    def _advance(self, name: str, position: int) -> None:
        if position <= self.positions.get(name, 0):
            return
        self.positions[name] = position
        for target, fut in self._waiters.get(name, ()):
            if target <= position and not fut.done():
                fut.set_result(None)

    async def _poll(self, name: str) -> None:
        position = await self.pool.fetchval(
            f"SELECT notification_id FROM {name}_tracking WHERE application_name = $1",
            APPLICATION_NAME,
        )
        if (position or 0) < self.positions.get(name, 0):
            self._reset(name)  # a rebuild started while no notification reached us
        if position is not None:
            self._advance(name, position)

    async def wait(self, name: str, position: int, timeout: float) -> bool:
        """True once projection `name` has applied `position`; False on timeout."""
        if self.positions.get(name, 0) >= position:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        entry = (position, loop.create_future())
        waiters = self._waiters.setdefault(name, [])
        waiters.append(entry)
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(asyncio.shield(entry[1]), min(remaining, self.poll_interval))
                    return True
                except TimeoutError:
                    await self._poll(name)
                    if entry[1].done():
                        return True
        finally:
            waiters.remove(entry)
