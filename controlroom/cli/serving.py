"""`controlroom serve`: the API over running services."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from controlroom.cli.budget import name_connections
from controlroom.cli.wiring import Services, artifact_store, bootstrap
from controlroom.settings import Settings

SETTLE_TIMEOUT_S = 5.0
STOP_DEADLINE_S = 30.0
"""After a stop signal the process exits by then, whatever is stuck (a hung database, say)."""
WRITE_THREADS = 16
"""Threads running writes. Appends share one commit when they meet at the log's lock (group
commit), so writers waiting there are what makes groups big; they hold no connection while
they wait, so threads cost no share of the connection budget."""


def _webhook_deps(services: Services, pool: Any) -> Any:
    """What the webhook routes need: commands, reads over `pool`, the SSRF guard."""
    from controlroom.adapters.webhooks.reads import WebhookReads
    from controlroom.api.webhooks.deps import WebhookDeps

    hooks = services.webhooks
    return WebhookDeps(hooks.commands, hooks.outcomes, WebhookReads(pool, hooks.box), hooks.guard)


def _open_deps(services: Services) -> Any:
    @contextlib.asynccontextmanager
    async def open_deps() -> AsyncIterator[Any]:
        from controlroom.adapters.connections import ConnectionReads
        from controlroom.adapters.lineage.graph import LineageGraph
        from controlroom.adapters.postgres.database import behind_transaction_pooler, create_read_pool
        from controlroom.adapters.postgres.listener import ProjectedListener
        from controlroom.adapters.postgres.projection_waiter import ProjectionWaiter
        from controlroom.adapters.runs.reads import RunReads
        from controlroom.api.deps import Deps

        pooler = behind_transaction_pooler(services.dsn, services.settings.transaction_pooler)
        budget = services.budget
        pool = await create_read_pool(services.dsn, budget.reads if budget else 3, pooler=pooler)
        listener = ProjectedListener(services.dsn, enabled=not pooler)
        waiter = ProjectionWaiter(pool, listener)
        lineage = LineageGraph(pool, waiter)
        await lineage.start()
        deps = Deps(services.commands, RunReads(pool), waiter,
                    write_threads=WRITE_THREADS, settle_timeout_s=SETTLE_TIMEOUT_S,
                    artifacts=artifact_store(services.settings),
                    connections=services.connections, connection_reads=ConnectionReads(pool),
                    preflight=_preflight(services), lineage=lineage,
                    webhooks=_webhook_deps(services, pool),
                    lineage_commands=services.lineage_commands,
                    max_artifact_bytes=services.settings.max_artifact_bytes,
                    events=await _event_streams(services, pool, listener),
                    api_keys=_api_key_deps(services, pool))
        await listener.start()  # after every subscriber: each catches up when it connects
        try:
            yield deps
        finally:
            deps.close()
            await listener.stop()
            assert deps.events is not None  # open_deps always gives Deps its event streams
            await deps.events.feed.stop()
            await lineage.stop()
            await pool.close()

    return open_deps


def _api_key_deps(services: Services, pool: Any) -> Any:
    """API keys: commands, reads over `pool`, and the verifier bearer `cr_…` keys go through."""
    from controlroom.adapters.api_keys import ApiKeyReads
    from controlroom.api.api_keys.auth import ApiKeyDeps, ApiKeyVerifier

    reads = ApiKeyReads(pool)
    return ApiKeyDeps(services.api_keys, reads, ApiKeyVerifier(reads))


async def _event_streams(services: Services, pool: Any, listener: Any) -> Any:
    """Live run events: replay from the read model, then what the process's listener announces."""
    from controlroom.adapters.events.feed import EventFeed
    from controlroom.adapters.events.reads import EventReads
    from controlroom.api.events.ports import EventStreams

    s = services.settings
    reads = EventReads(pool)
    feed = EventFeed(reads, listener, buffer=s.sse_buffer, heartbeat_s=s.sse_heartbeat_s)
    await feed.start()
    return EventStreams(reads, feed)


def _preflight(services: Services) -> Any:
    """Pre-flight validation with this machine's tools, the tenants' connections and what each
    job type declares it demands."""
    from controlroom.adapters.runs.preflight import LocalTools, PostgresTables
    from controlroom.jobtypes import default_job_types
    from controlroom.validation import Preflight

    s = services.settings
    return Preflight(LocalTools(), connections=services.connection_store, tables=PostgresTables(),
                     job_rules=default_job_types(services.connection_store).rules(),
                     executors=s.executors, default_executor=s.executor)


def build_app(services: Services) -> Any:
    """The Litestar app over running services."""
    from controlroom.api.app import create_app
    from controlroom.api.auth import TokenVerifier

    s = services.settings
    jwks = None
    if s.jwks_url:
        from controlroom.adapters.security.jwks import JwksKeys

        jwks = JwksKeys(s.jwks_url)
    verifier = TokenVerifier(services.jwt_secret, audience=s.jwt_audience, issuer=s.jwt_issuer,
                             jwks=jwks, max_lifetime_s=s.jwt_max_lifetime_s)
    app = create_app(verifier, _open_deps(services), max_body_bytes=s.max_body_bytes)
    app.state.sandbox_warning = services.sandbox_warning  # shown by /readyz
    app.state.services_health = services.running.health  # shown by /readyz
    return app


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Run the API (with projections and an in-process worker)."""
    import uvicorn

    name_connections("serve")
    with bootstrap(settings, run_worker=not args.no_worker,
                   run_projections=not args.no_projections) as services:
        app = build_app(services)
        print(f"Control Room listening on {settings.base_url}  (data: {settings.data_dir})",
              file=sys.stderr)
        if services.budget is not None:
            print(services.budget.describe(), file=sys.stderr)
        if settings.jwt_secret is None:
            print("Get a token:  controlroom token --tenant default --sub $USER"
                  + (f" --data-dir {settings.data_dir}" if args.data_dir else ""), file=sys.stderr)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                access_log=False, lifespan="on",
                                # uvicorn waits on it with asyncio.timeout: seconds as a float do.
                                timeout_graceful_shutdown=settings.shutdown_grace_s)  # type: ignore[arg-type]
        watchdog = _StopWatchdog(STOP_DEADLINE_S)
        server = _server_ending_streams_first(config, app, watchdog)
        with _signals_stop(server, watchdog):
            server.run()  # on uvloop when installed (uvicorn's loop="auto")
    return 0


def _server_ending_streams_first(config: Any, app: Any, watchdog: _StopWatchdog) -> Any:
    """A uvicorn server that ends live event streams when it stops: it waits for open responses.

    Stopping arms the watchdog (uvicorn's own signal handlers are the ones called meanwhile).
    """
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            watchdog.arm()
            deps = app.state.get("deps")
            if deps is not None and deps.events is not None:
                deps.events.close()  # their clients reconnect with Last-Event-ID
            await super().shutdown(sockets)

    return Server(config)


class _StopWatchdog:
    """Once armed, exits the process after `deadline_s` whatever is still running: a thread
    stuck in a database call must not keep it alive (blocking the teardown, or the
    interpreter's exit, for ever)."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def arm(self) -> None:
        """Start the countdown (once)."""
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self.deadline_s, self._exit)
                self._timer.daemon = True
                self._timer.start()

    def _exit(self) -> None:
        print(f"controlroom: shutdown still not done after {self.deadline_s:.0f}s; exiting now",
              file=sys.stderr, flush=True)
        os._exit(1)


@contextlib.contextmanager
def _signals_stop(server: Any, watchdog: _StopWatchdog | None = None) -> Iterator[None]:
    """SIGTERM/SIGINT stop `server` and then let the caller's teardown run (within the
    watchdog's deadline).

    After its graceful shutdown uvicorn re-raises the signal that stopped it; under the
    default handlers that killed the process (exit -15) before the worker, projections
    and embedded PostgreSQL were stopped. This handler turns that re-raise into a no-op
    (and covers a signal arriving before uvicorn installs its own handlers).
    """

    def stop(signum: int, frame: Any) -> None:
        server.should_exit = True
        if watchdog is not None:
            watchdog.arm()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
