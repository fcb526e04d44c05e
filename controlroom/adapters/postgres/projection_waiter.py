"""Read-your-writes: wait until a projection has applied a position (announcements + polling)."""

from __future__ import annotations

import asyncio

import asyncpg

from controlroom.adapters.postgres.listener import ProjectedListener

POLL_INTERVAL_S = 0.25
"""Fallback when a notification is missed (e.g. while the listener reconnects)."""
POOLER_POLL_INTERVAL_S = 0.02
"""Behind a transaction pooler LISTEN can't work: polling is the only way."""
APPLICATION_NAME = "controlroom"


class ProjectionWaiter:
    """Every waiting request woken by the process's one listener (polling covers its gaps)."""

    def __init__(self, pool: asyncpg.Pool, listener: ProjectedListener) -> None:
        self.pool = pool
        self.poll_interval = POLL_INTERVAL_S if listener.enabled else POOLER_POLL_INTERVAL_S
        self.positions: dict[str, int] = {}
        self.resets: dict[str, int] = {}
        """How often each projection was seen to start over (a rebuild): holders of state reload."""
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        listener.subscribe(self._announced)

    def _announced(self, name: str, position: int) -> None:
        if position == 0:
            self._reset(name)
        else:
            self._advance(name, position)

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
