"""The one LISTEN connection of an API process: projections' announcements, fanned out in memory.

Read-your-writes waits, the live event feed and the lineage graph all want to know when a
projection has applied a position (`<projection>:<position>` on the projected channel). One
connection serves them all, and is re-opened whenever it is lost (a database restart, a
network cut): until then, and behind a transaction pooler where LISTEN can't work, each
consumer falls back to polling on its own schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from controlroom.adapters.postgres.database import application_name
from controlroom.projections.view import PROJECTED_CHANNEL

log = logging.getLogger("controlroom.listener")

RECONNECT_S = 1.0
CONNECT_TIMEOUT_S = 5.0

Callback = Callable[[str, int], None]
"""Called with (projection, position); position 0 means the projection started over (a rebuild)."""


class ProjectedListener:
    """LISTENs on the projected channel and hands each announcement to every subscriber."""

    def __init__(self, dsn: str, *, enabled: bool = True) -> None:
        self.dsn = dsn
        self.enabled = enabled
        """False behind a transaction pooler: nothing is ever announced, consumers poll."""
        self._callbacks: list[Callback] = []
        self._on_connect: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, callback: Callback, *, on_connect: Callable[[], None] | None = None) -> None:
        """Receive every announcement; `on_connect` runs after each (re)connection, to catch up
        on what was announced while nobody listened."""
        self._callbacks.append(callback)
        if on_connect is not None:
            self._on_connect.append(on_connect)

    async def start(self) -> None:
        """Begin listening (in the background; failures to connect are retried)."""
        if self.enabled:
            self._task = asyncio.create_task(self._listen(), name="projected-listener")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _dispatch(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        name, _, position = str(payload).rpartition(":")
        if not position.isdigit():
            return
        for callback in self._callbacks:
            try:
                callback(name, int(position))
            except Exception:  # one consumer's bug must not silence the others
                log.exception("a subscriber failed on %r", payload)

    async def _listen(self) -> None:
        warned = False
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT_S,
                                             server_settings=application_name())
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(PROJECTED_CHANNEL, self._dispatch)
                if warned:
                    log.info("listening for projections again")
                warned = False
                for caught_up in self._on_connect:
                    caught_up()
                await lost.wait()
                log.warning("LISTEN connection lost; reconnecting (polling meanwhile)")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not warned:
                    log.warning("LISTEN unavailable (%s: %s); polling until it is back",
                                type(e).__name__, e)
                warned = True
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            await asyncio.sleep(RECONNECT_S)
