"""The command line and the composition root: the only module that wires things together."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from controlroom.settings import DEFAULT_TOKEN_TTL_S, Settings, from_env

log = logging.getLogger("controlroom")

SETTLE_TIMEOUT_S = 5.0
WRITE_THREADS = 3
"""Appends serialise on the event-store lock; more threads only add GIL contention."""


@dataclass
class Services:
    """Everything a running Control Room process holds."""

    settings: Settings
    dsn: str
    jwt_secret: str
    env: dict[str, str]
    commands: Any
    closers: list[Any] = field(default_factory=list)
    connections: Any = None
    connection_store: Any = None
    webhooks: Any = None
    lineage_commands: Any = None


def _keys(settings: Settings) -> tuple[str, str]:
    from controlroom.adapters.keys import load_or_create

    jwt_secret = settings.jwt_secret or load_or_create(settings.data_dir, "jwt_secret")
    secret_key = settings.secret_key or load_or_create(settings.data_dir, "secret_key")
    return jwt_secret, secret_key


@contextlib.contextmanager
def bootstrap(
    settings: Settings, *, run_worker: bool = True, run_projections: bool = True
) -> Iterator[Services]:
    """Start the database (if embedded), the write side, projections and the worker."""
    from controlroom.adapters.database import apply_schema, eventsourcing_env, redact
    from controlroom.adapters.secretbox import AesGcmSecretBox
    from controlroom.commands.application import ControlRoom
    from controlroom.commands.handlers import RunCommands
    from controlroom.commands.lineage import LineageCommands

    with contextlib.ExitStack() as stack:
        if settings.embedded:
            from controlroom.adapters.embedded_postgres import EmbeddedPostgres

            dsn = stack.enter_context(EmbeddedPostgres(settings.data_dir)).dsn
        else:
            dsn = settings.database_url or ""
        log.info("database: %s", redact(dsn))
        apply_schema(dsn)
        jwt_secret, secret_key = _keys(settings)
        env = eventsourcing_env(dsn, pooler=settings.transaction_pooler)
        app = ControlRoom(env=env)
        stack.callback(app.close)
        commands = RunCommands(app, AesGcmSecretBox(secret_key))
        services = Services(settings, dsn, jwt_secret, env, commands)
        _wire_connections(services, app, AesGcmSecretBox(secret_key))
        _wire_webhooks(services, app, AesGcmSecretBox(secret_key))
        stack.callback(lambda: [close() for close in reversed(services.closers)])
        services.lineage_commands = LineageCommands(app)
        stack.enter_context(
            _projections(services, run_worker=run_worker, run_projections=run_projections)
        )
        yield services


@contextlib.contextmanager
def _projections(services: Services, *, run_worker: bool, run_projections: bool) -> Iterator[None]:
    from eventsourcing.postgres import PostgresTrackingRecorder
    from eventsourcing.projection import ProjectionRunner

    from controlroom.adapters.database import eventsourcing_env
    from controlroom.adapters.leases import PostgresLeases
    from controlroom.adapters.local_executor import LocalExecutor
    from controlroom.adapters.local_queue import InProcessQueue
    from controlroom.adapters.run_index import active_runs
    from controlroom.commands.application import ControlRoom
    from controlroom.commands.reaper import Reaper
    from controlroom.commands.worker import RunWorker, recover
    from controlroom.jobtypes import default_job_types
    from controlroom.projections.dispatch import DispatchProjection
    from controlroom.projections.host import ProjectionHost
    from controlroom.projections.run_events import RunEventsProjection, RunEventsView
    from controlroom.projections.run_status import RunStatusProjection, RunStatusView

    env = {
        **eventsourcing_env(
            services.dsn, for_projection=True, pooler=services.settings.transaction_pooler
        ),
        # The event store exists already; runners creating it concurrently collide on DDL.
        "CONTROLROOM_CREATE_TABLE": "n",
    }

    def runner(projection: Any, view: Any) -> Any:
        return lambda: ProjectionRunner(
            application_class=ControlRoom, projection_class=projection, view_class=view, env=env,
        )

    settings = services.settings
    leases = PostgresLeases(services.dsn, pooler=settings.transaction_pooler)
    hosts = []
    if run_projections:
        hosts.append(
            ProjectionHost("run_status", services.dsn, runner(RunStatusProjection, RunStatusView))
        )
        hosts.append(_connections_host(services))
        hosts.extend(_webhook_hosts(services))
        hosts.append(ProjectionHost("run_events", services.dsn,
                                    runner(RunEventsProjection, RunEventsView)))
        hosts.append(_lineage_host(services))
    worker = None
    if run_worker:
        worker = RunWorker(
            services.commands, LocalExecutor(), default_job_types(services.connection_store),
            worker_id=f"{socket.gethostname()}:{os.getpid()}", base_url=settings.base_url,
            leases=leases, lease_timeout_s=settings.lease_timeout_s,
            tokens=_run_tokens(services), artifacts=_artifact_store(settings),
        )
    queue, dispatching = _run_queue(settings, worker, run_projections=run_projections)
    if queue is not None and dispatching:  # the dispatcher and the reaper feed the same queue
        dispatcher = DispatchProjection.feeding(queue)
        hosts.append(ProjectionHost("dispatch", services.dsn,
                                    runner(dispatcher, PostgresTrackingRecorder)))
        hosts.append(ProjectionHost("reaper", services.dsn, lambda: Reaper(
            services.commands, leases, leases, queue, lease_timeout_s=settings.lease_timeout_s)))
    for host in hosts:
        host.start()
    if isinstance(queue, InProcessQueue):
        recover(services.commands, queue, active_runs(services.dsn),
                orphaned_running=settings.embedded)
    elif queue is not None and worker is not None:
        queue.start(worker.execute, threads=settings.worker_slots)
    try:
        yield
    finally:
        if isinstance(queue, InProcessQueue):
            worker.stopping.set()
            queue.stop()
        elif worker is not None:  # dramatiq: take no more messages, then end running jobs
            queue.stop(on_stopping=worker.stopping.set)
        for host in hosts:
            host.stop()
        if queue is not None and not isinstance(queue, InProcessQueue):
            queue.close()
        leases.close()


def _run_queue(settings: Settings, worker: Any, *, run_projections: bool) -> tuple[Any, bool]:
    """The run queue this process needs, and whether it hosts the dispatcher and reaper.

    With REDIS_URL: dramatiq on Redis, fed where the projections run and consumed where a
    worker runs. Without: an in-process queue, fed and consumed only beside the worker.
    """
    from controlroom.adapters.local_queue import InProcessQueue

    if settings.redis_url and (worker is not None or run_projections):
        from controlroom.adapters.dramatiq_queue import DramatiqQueue

        return DramatiqQueue(settings.redis_url, namespace=settings.redis_namespace), run_projections
    if worker is None:
        return None, False
    queue = InProcessQueue(worker.execute, slots=settings.worker_slots)
    queue.start()
    return queue, True


def _artifact_store(settings: Settings) -> Any:
    """Files under the data dir, or an S3-compatible bucket when CONTROLROOM_ARTIFACT_STORE says so."""
    from controlroom.adapters.artifact_store import LocalArtifactStore

    if settings.artifact_store:
        from controlroom.adapters.s3_artifact_store import S3ArtifactStore

        return S3ArtifactStore(settings.artifact_store, endpoint=settings.s3_endpoint,
                               spool_dir=settings.data_dir / "artifact-spool")
    return LocalArtifactStore(settings.data_dir / "artifacts")


def _run_tokens(services: Services) -> Any:
    from controlroom.adapters.run_tokens import HmacRunTokens

    s = services.settings
    return HmacRunTokens(services.jwt_secret, audience=s.jwt_audience, issuer=s.jwt_issuer)


def _wire_connections(services: Services, app: Any, box: Any) -> None:
    """Tenant connections: commands for the API and CLI, the store job types resolve with."""
    from controlroom.adapters.connection_store import ConnectionStore
    from controlroom.commands.connections import ConnectionCommands

    services.connections = ConnectionCommands(app, box)
    services.connection_store = ConnectionStore(services.dsn, box)


def _connections_host(services: Services) -> Any:
    """The host of the `connections` projection."""
    from eventsourcing.projection import ProjectionRunner

    from controlroom.adapters.database import eventsourcing_env
    from controlroom.commands.application import ControlRoom
    from controlroom.projections.connections import ConnectionsProjection, ConnectionsView
    from controlroom.projections.host import ProjectionHost

    env = {**eventsourcing_env(services.dsn, for_projection=True,
                               pooler=services.settings.transaction_pooler),
           "CONTROLROOM_CREATE_TABLE": "n"}
    return ProjectionHost("connections", services.dsn, lambda: ProjectionRunner(
        application_class=ControlRoom, projection_class=ConnectionsProjection,
        view_class=ConnectionsView, env=env,
    ))


def _lineage_host(services: Services) -> Any:
    """The host of the `lineage` projection."""
    from eventsourcing.projection import ProjectionRunner

    from controlroom.adapters.database import eventsourcing_env
    from controlroom.commands.application import ControlRoom
    from controlroom.projections.host import ProjectionHost
    from controlroom.projections.lineage import LineageProjection, LineageView

    env = {**eventsourcing_env(services.dsn, for_projection=True,
                               pooler=services.settings.transaction_pooler),
           "CONTROLROOM_CREATE_TABLE": "n"}
    return ProjectionHost("lineage", services.dsn, lambda: ProjectionRunner(
        application_class=ControlRoom, projection_class=LineageProjection,
        view_class=LineageView, env=env,
    ))


def _wire_webhooks(services: Services, app: Any, box: Any) -> None:
    """Webhook secrets and subscriptions, inbound outcomes, and the SSRF guard."""
    from types import SimpleNamespace

    from controlroom.adapters.ssrf import CallbackGuard
    from controlroom.commands.inbound import InboundOutcomes
    from controlroom.commands.webhooks import WebhookCommands

    s = services.settings.webhooks
    services.webhooks = SimpleNamespace(
        commands=WebhookCommands(app, box, grace_s=s.secret_grace_s),
        outcomes=InboundOutcomes(services.commands), guard=CallbackGuard(s.callback_allowlist),
        box=box,
    )


def _webhook_hosts(services: Services) -> list[Any]:
    """The outbox projection and the delivery worker, each active in one process at a time."""
    from eventsourcing.projection import ProjectionRunner

    from controlroom.adapters.database import eventsourcing_env
    from controlroom.adapters.webhook_delivery import HttpWebhookSender
    from controlroom.adapters.webhook_store import PostgresDeliveryStore
    from controlroom.commands.application import ControlRoom
    from controlroom.commands.deliveries import DeliveryWorker
    from controlroom.domain.webhooks import DeliveryPolicy, parse_schedule
    from controlroom.projections.host import ProjectionHost
    from controlroom.projections.outbox import OutboxProjection, OutboxView

    settings, hooks = services.settings, services.webhooks
    s = settings.webhooks
    env = {**eventsourcing_env(services.dsn, for_projection=True, pooler=settings.transaction_pooler),
           "CONTROLROOM_CREATE_TABLE": "n"}
    outbox = OutboxProjection.linking_to(settings.base_url)
    store = PostgresDeliveryStore(services.dsn, hooks.box)
    sender = HttpWebhookSender(hooks.guard, timeout_s=s.timeout_s)
    services.closers.extend([store.shutdown, sender.close])
    policy = DeliveryPolicy(parse_schedule(s.retry_schedule)) if s.retry_schedule else DeliveryPolicy()
    return [
        ProjectionHost("webhooks", services.dsn, lambda: ProjectionRunner(
            application_class=ControlRoom, projection_class=outbox, view_class=OutboxView, env=env)),
        ProjectionHost("webhook_delivery", services.dsn, lambda: DeliveryWorker(
            store, sender, hooks.commands, policy, concurrency=s.concurrency)),
    ]


def _webhook_deps(services: Services, pool: Any) -> Any:
    """What the webhook routes need: commands, reads over `pool`, the SSRF guard."""
    from controlroom.adapters.webhook_reads import WebhookReads
    from controlroom.api.webhook_deps import WebhookDeps

    hooks = services.webhooks
    return WebhookDeps(hooks.commands, hooks.outcomes, WebhookReads(pool, hooks.box), hooks.guard)


def cmd_connections(settings: Settings, args: argparse.Namespace) -> int:
    """Set, list or delete a tenant's connections, straight against the database."""
    from controlroom.commands.errors import ConnectionNotFoundError
    from controlroom.domain.connection import InvalidConnectionError

    with bootstrap(settings, run_worker=False, run_projections=False) as services:
        host = _connections_host(services).start()  # standby if a running service has it
        try:
            if args.action == "set":
                dsn = sys.stdin.readline().strip() if args.dsn == "-" else args.dsn
                saved = services.connections.set(args.tenant, args.name, dsn, args.by)
                print(f"{'created' if saved.created else 'updated'} {saved.name}: {saved.display_dsn}")
            elif args.action == "delete":
                services.connections.delete(args.tenant, args.name, args.by)
                print(f"deleted {args.name}")
            if not services.connection_store.wait_caught_up(SETTLE_TIMEOUT_S):
                print("warning: the connections read model is behind; listings may lag",
                      file=sys.stderr)
            if args.action == "list":
                for name, display, *_ in services.connection_store.listing(args.tenant):
                    print(f"{name}\t{display}")
        except (InvalidConnectionError, ConnectionNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            host.stop()
    return 0


def _open_deps(services: Services) -> Any:
    @contextlib.asynccontextmanager
    async def open_deps() -> AsyncIterator[Any]:
        from controlroom.adapters.connection_store import ConnectionReads
        from controlroom.adapters.database import behind_transaction_pooler, create_read_pool
        from controlroom.adapters.lineage_graph import LineageGraph
        from controlroom.adapters.projection_waiter import ProjectionWaiter
        from controlroom.adapters.run_reads import RunReads
        from controlroom.api.deps import Deps

        pooler = behind_transaction_pooler(services.dsn, services.settings.transaction_pooler)
        pool = await create_read_pool(services.dsn, pooler=pooler)
        waiter = ProjectionWaiter(services.dsn, pool, listen=not pooler)
        await waiter.start()
        lineage = LineageGraph(pool, waiter)
        await lineage.start()
        deps = Deps(services.commands, RunReads(pool), waiter,
                    write_threads=WRITE_THREADS, settle_timeout_s=SETTLE_TIMEOUT_S,
                    artifacts=_artifact_store(services.settings),
                    connections=services.connections, connection_reads=ConnectionReads(pool),
                    preflight=_preflight(services), lineage=lineage,
                    webhooks=_webhook_deps(services, pool),
                    lineage_commands=services.lineage_commands,
                    max_artifact_bytes=services.settings.max_artifact_bytes,
                    events=await _event_streams(services, pool, pooler))
        try:
            yield deps
        finally:
            deps.close()
            await deps.events.feed.stop()
            await lineage.stop()
            await waiter.stop()
            await pool.close()

    return open_deps


async def _event_streams(services: Services, pool: Any, pooler: bool) -> Any:
    """Live run events: replay from the read model, one LISTEN connection fanned out in memory."""
    from controlroom.adapters.event_feed import EventFeed
    from controlroom.adapters.event_reads import EventReads
    from controlroom.api.event_ports import EventStreams

    s = services.settings
    reads = EventReads(pool)
    feed = EventFeed(services.dsn, reads, listen=not pooler, buffer=s.sse_buffer,
                     heartbeat_s=s.sse_heartbeat_s)
    await feed.start()
    return EventStreams(reads, feed)


def _preflight(services: Services) -> Any:
    """Pre-flight validation with this machine's tools and the tenants' connections."""
    from controlroom.adapters.preflight import LocalTools, PostgresTables
    from controlroom.validation import Preflight

    return Preflight(LocalTools(), connections=services.connection_store, tables=PostgresTables())


def build_app(services: Services) -> Any:
    """The Litestar app over running services."""
    from controlroom.api.app import create_app
    from controlroom.api.auth import TokenVerifier

    s = services.settings
    verifier = TokenVerifier(services.jwt_secret, audience=s.jwt_audience, issuer=s.jwt_issuer)
    return create_app(verifier, _open_deps(services), max_body_bytes=s.max_body_bytes)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Run the API (with projections and an in-process worker)."""
    import uvicorn

    with bootstrap(settings, run_worker=not args.no_worker,
                   run_projections=not args.no_projections) as services:
        app = build_app(services)
        print(f"Control Room listening on {settings.base_url}  (data: {settings.data_dir})",
              file=sys.stderr)
        if settings.jwt_secret is None:
            print("Get a token:  controlroom token --tenant default --sub $USER"
                  + (f" --data-dir {settings.data_dir}" if args.data_dir else ""), file=sys.stderr)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                access_log=False, lifespan="on")
        server = _server_ending_streams_first(config, app)
        with _signals_stop(server):
            server.run()  # on uvloop when installed (uvicorn's loop="auto")
    return 0


def _server_ending_streams_first(config: Any, app: Any) -> Any:
    """A uvicorn server that ends live event streams when it stops: it waits for open responses."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            deps = app.state.get("deps")
            if deps is not None and deps.events is not None:
                deps.events.close()  # their clients reconnect with Last-Event-ID
            await super().shutdown(sockets)

    return Server(config)


@contextlib.contextmanager
def _signals_stop(server: Any) -> Iterator[None]:
    """SIGTERM/SIGINT stop `server` and then let the caller's teardown run.

    After its graceful shutdown uvicorn re-raises the signal that stopped it; under the
    default handlers that killed the process (exit -15) before the worker, projections
    and embedded PostgreSQL were stopped. This handler turns that re-raise into a no-op
    (and covers a signal arriving before uvicorn installs its own handlers).
    """

    def stop(signum: int, frame: Any) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_background(settings: Settings, args: argparse.Namespace) -> int:
    """Run only the worker, or only the projections, until interrupted."""
    import signal
    import threading

    worker = args.command == "worker"
    if worker and settings.worker_processes > 1:
        return _worker_processes(settings, args)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with bootstrap(settings, run_worker=worker, run_projections=not worker):
        print(f"Control Room {args.command} running (data: {settings.data_dir})", file=sys.stderr)
        done.wait()
    return 0


def _worker_processes(settings: Settings, args: argparse.Namespace) -> int:
    """`worker --processes N`: N single-process workers, each restarted if it dies."""
    from controlroom.adapters.dramatiq_queue import supervise

    if not settings.redis_url:
        print("--processes needs REDIS_URL (without it, runs queue inside one process)",
              file=sys.stderr)
        return 2
    env = {**os.environ, "CONTROLROOM_DATA_DIR": str(settings.data_dir),
           "CONTROLROOM_WORKER_PROCESSES": "1"}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    argv = [sys.executable, "-m", "controlroom.cli", *(["-v"] if args.verbose else []),
            "worker", "--threads", str(settings.worker_slots)]
    return supervise(argv, env, settings.worker_processes)


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    """Print a signed token."""
    from controlroom.api.auth import issue_token

    secret, _ = _keys(settings)
    print(issue_token(secret, tenant=args.tenant, sub=args.sub, scopes=args.scope.split(),
                      ttl_s=args.ttl, audience=settings.jwt_audience, issuer=settings.jwt_issuer))
    return 0


def parser() -> argparse.ArgumentParser:
    """The `controlroom` argument parser."""
    from controlroom.api.auth import DEFAULT_SCOPES
    from controlroom.client.commands import add_commands as add_client_commands

    p = argparse.ArgumentParser(
        prog="controlroom", description="Control Room: submit jobs, watch runs, keep their lineage."
    )
    p.add_argument("--data-dir", help="data directory (env CONTROLROOM_DATA_DIR)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API, projections and an in-process worker")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--workers", type=int, dest="worker_slots",
                       help="jobs run at once by the in-process worker (default 2)")
    serve.add_argument("--no-worker", action="store_true", help="don't execute jobs here")
    serve.add_argument("--no-projections", action="store_true",
                       help="leave the read models to `controlroom projector` processes")
    serve.add_argument("--database-url", help="external Postgres (env DATABASE_URL)")
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="execute queued runs (no API)")
    worker.add_argument("--threads", "--workers", type=int, dest="worker_slots",
                        help="jobs each worker process runs at once (default 2)")
    worker.add_argument("--processes", type=int, dest="worker_processes",
                        help="worker processes (default 1; more than one needs REDIS_URL)")
    worker.add_argument("--database-url", help="external Postgres (env DATABASE_URL)")
    worker.set_defaults(func=cmd_background)
    projector = sub.add_parser("projector", help="keep the read models up to date (no API)")
    projector.add_argument("--database-url", help="external Postgres (env DATABASE_URL)")
    projector.set_defaults(func=cmd_background)
    conns = sub.add_parser("connections", help="manage a tenant's named database connections")
    conns.add_argument("--database-url", help="external Postgres (env DATABASE_URL)")
    actions = conns.add_subparsers(dest="action", required=True)
    for action, help_text in (("set", "create or replace a connection"),
                              ("list", "list connections (passwords masked)"),
                              ("delete", "remove a connection")):
        a = actions.add_parser(action, help=help_text)
        a.add_argument("--tenant", required=True)
        a.add_argument("--by", default=os.environ.get("USER") or "cli", help="recorded as updated_by")
        if action != "list":
            a.add_argument("name")
        if action == "set":
            a.add_argument("dsn", help="postgresql://user:password@host:port/db, or - to read stdin")
    conns.set_defaults(func=cmd_connections)
    token = sub.add_parser("token", help="print a bearer token for the API")
    token.add_argument("--tenant", required=True)
    token.add_argument("--sub", required=True, help="who the token is for")
    token.add_argument("--scope", default=DEFAULT_SCOPES, help=f"default: {DEFAULT_SCOPES!r}")
    token.add_argument("--ttl", type=int, default=DEFAULT_TOKEN_TTL_S, help="seconds")
    token.set_defaults(func=cmd_token)
    add_client_commands(sub)  # submit, runs watch: HTTP only (controlroom/client/)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `controlroom` command."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = from_env()
    overrides = {k: getattr(args, k, None)
                 for k in ("host", "port", "worker_slots", "worker_processes")}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    settings = msgspec.structs.replace(
        settings, **{k: v for k, v in overrides.items() if v is not None}
    )
    from pathlib import Path

    settings.data_dir = Path(settings.data_dir)
    return int(args.func(settings, args))


if __name__ == "__main__":
    sys.exit(main())
