"""The composition root: the services a process holds, started and stopped together."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controlroom.cli.budget import ConnectionBudget, connection_budget
from controlroom.cli.hosts import (
    dispatch_model,
    outbox_model,
    pipeline,
    read_models,
    reaper_host,
    webhook_hosts,
)
from controlroom.cli.sandboxing import local_sandbox
from controlroom.services import ServiceStack
from controlroom.settings import Settings

if TYPE_CHECKING:
    from controlroom.projections.pipeline import ReadModel

log = logging.getLogger("controlroom")


@dataclass
class Services:
    """Everything a running Control Room process holds."""

    settings: Settings
    dsn: str
    jwt_secret: str
    env: dict[str, str]
    commands: Any
    closers: list[Any] = field(default_factory=list)
    """What to close once the services stopped (clients their loops used)."""
    running: ServiceStack = field(default_factory=ServiceStack)
    """The process's services (its loops), stopped in the reverse order they started."""
    connections: Any = None
    connection_store: Any = None
    webhooks: Any = None
    lineage_commands: Any = None
    api_keys: Any = None
    api_key_store: Any = None
    sandbox_warning: str | None = None
    """Set when this process's worker runs local jobs unsandboxed (shown by /readyz)."""
    budget: ConnectionBudget | None = None
    operations: Any = None
    """The pool for short blocking statements (database.operations_pool)."""
    _session: Any = None

    def session(self) -> Any:
        """The process's session connection (locks, wake-ups), started on first use: a tier of
        its own below every holder, so it stops after them."""
        if self._session is None:
            from controlroom.projections.session import LockSession

            self._session = LockSession(self.dsn)
            self.running.start(self._session)
        return self._session


def _private_data_dir(settings: Settings) -> None:
    """Create the data dir readable by this user only (keys, artifacts, the database)."""
    path = settings.data_dir
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = path.stat().st_mode & 0o777
    if mode & 0o067 and path.stat().st_uid == os.geteuid():
        # Group traverse stays: the embedded PostgreSQL's own user reaches its dir through it.
        path.chmod(mode & 0o710)


def keys(settings: Settings) -> tuple[str, str]:
    from controlroom.adapters.security.keys import load_or_create

    jwt_secret = settings.jwt_secret or load_or_create(settings.data_dir, "jwt_secret")
    secret_key = settings.secret_key or load_or_create(settings.data_dir, "secret_key")
    return jwt_secret, secret_key


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The database's DSN: DATABASE_URL, or the embedded PostgreSQL, started for as long as this
    lasts (or found running on the data dir)."""
    from controlroom.adapters.postgres.database import redact

    _private_data_dir(settings)
    with contextlib.ExitStack() as stack:
        if settings.embedded:
            from controlroom.adapters.postgres.embedded import EmbeddedPostgres

            dsn = stack.enter_context(EmbeddedPostgres(settings.data_dir)).dsn
        else:
            dsn = settings.database_url or ""
        log.info("database: %s", redact(dsn))
        yield dsn


@contextlib.contextmanager
def bootstrap(
    settings: Settings, *, run_worker: bool = True, run_projections: bool = True,
    api: bool = True, kube_client: Any = None,
) -> Iterator[Services]:
    """Start the database (if embedded), the write side, projections and the worker.

    `api`: the process will serve the API (its pools count in the connection budget).
    `kube_client`: a `kubernetes.client.ApiClient` for the Kubernetes executor instead of the
    in-cluster or kubeconfig configuration.
    """
    from controlroom.adapters.postgres.database import apply_schema, eventsourcing_env, operations_pool
    from controlroom.adapters.security.secretbox import AesGcmSecretBox
    from controlroom.commands.application import ControlRoom
    from controlroom.commands.lineage import LineageCommands
    from controlroom.commands.runs.handlers import RunCommands

    with contextlib.ExitStack() as stack:
        dsn = stack.enter_context(database(settings))
        apply_schema(dsn)
        jwt_secret, secret_key = keys(settings)
        budget = connection_budget(settings, api=api, worker=run_worker,
                                   projections=run_projections)
        env = eventsourcing_env(dsn, pool_size=budget.writes, pooler=settings.transaction_pooler,
                               cache=settings.run_cache)
        app = ControlRoom(env=env)
        stack.callback(app.close)
        operations = operations_pool(dsn, budget.operations, pooler=settings.transaction_pooler)
        stack.callback(operations.close)
        commands = RunCommands(app, AesGcmSecretBox(secret_key))
        services = Services(settings, dsn, jwt_secret, env, commands, budget=budget,
                            operations=operations)
        _wire_connections(services, app, AesGcmSecretBox(secret_key))
        _wire_api_keys(services, app)
        _wire_webhooks(services, app, AesGcmSecretBox(secret_key))
        stack.callback(lambda: [close() for close in reversed(services.closers)])
        stack.callback(services.running.stop)  # the one place a process's services stop
        services.lineage_commands = LineageCommands(app)
        _start_services(services, run_worker=run_worker, run_projections=run_projections,
                        kube_client=kube_client)
        log.info("%s", budget.describe())
        yield services


def _start_services(
    services: Services, *, run_worker: bool, run_projections: bool, kube_client: Any = None
) -> None:
    """Start this process's services, in the one place they start: the session (on first
    use), the spool flusher, the loops under advisory locks and the read models, then the job
    worker. `services.running` stops them in the reverse order."""
    from controlroom.adapters.execution.leases import PostgresLeases
    from controlroom.adapters.execution.local_queue import InProcessQueue
    from controlroom.adapters.execution.spool import FileSpools
    from controlroom.adapters.runs.index import active_runs
    from controlroom.commands.execution.reaper import LeaseTiming
    from controlroom.commands.execution.worker import JobWorker, RunWorker, recover
    from controlroom.jobtypes import default_job_types

    settings = services.settings
    # Refused before anything starts: a timing that breaks fencing could run two attempts at once.
    timing = LeaseTiming.of(settings.lease_timeout_s, settings.lease_renew_s,
                            settings.lease_reap_grace_s).check()
    leases = PostgresLeases(services.operations)
    hosts: list[Any] = []
    models: list[ReadModel] = []
    if run_projections:
        models.extend(read_models(services).values())
        models.append(outbox_model(services))
        hosts.extend(webhook_hosts(services))
    worker = None
    if run_worker:
        sandbox, services.sandbox_warning = local_sandbox(settings)
        worker = RunWorker(
            services.commands, executor(settings, kube_client, sandbox),
            default_job_types(services.connection_store),
            worker_id=f"{socket.gethostname()}:{os.getpid()}", base_url=settings.base_url,
            leases=leases, lease_timing=timing,
            tokens=run_tokens(services), artifacts=artifact_store(settings),
            spools=FileSpools(settings.data_dir / "spool", settings.spool_max_bytes),
        )
    queue, dispatching = _run_queue(settings, worker, run_projections=run_projections)
    if queue is not None and dispatching:  # the dispatcher and the reaper feed the same queue
        models.append(dispatch_model(queue))
        hosts.append(reaper_host(services, queue, leases))
    if models:
        hosts.append(pipeline(services, models))
    if queue is not None and not isinstance(queue, InProcessQueue):
        services.closers.append(queue.close)
    if worker is not None and (flusher := worker.spool_flusher()) is not None:
        services.running.start(flusher)  # its first pass before `recover` fails orphaned runs
    services.running.start(*hosts)  # stopped together: each may take its runner's poll to notice
    if worker is None:
        return
    if isinstance(queue, InProcessQueue):
        in_process = queue

        def begin() -> None:
            in_process.start()
            recover(services.commands, in_process, active_runs(services.dsn),
                    orphaned_running=settings.embedded)
    else:  # dramatiq: any number of workers take runs from Redis
        def begin() -> None:
            queue.start(worker.execute, threads=settings.worker_slots)
    services.running.start(JobWorker(worker, queue, begin))


def _run_queue(settings: Settings, worker: Any, *, run_projections: bool) -> tuple[Any, bool]:
    """The run queue this process needs, and whether it hosts the dispatcher and reaper.

    With REDIS_URL: dramatiq on Redis, fed where the projections run and consumed where a
    worker runs. Without: an in-process queue, fed and consumed only beside the worker.
    """
    from controlroom.adapters.execution.local_queue import InProcessQueue

    if settings.redis_url and (worker is not None or run_projections):
        from controlroom.adapters.execution.dramatiq_queue import DramatiqQueue

        return DramatiqQueue(settings.redis_url, namespace=settings.redis_namespace), run_projections
    if worker is None:
        return None, False
    return InProcessQueue(worker.execute, slots=settings.worker_slots), True


NO_KUBERNETES = ("Kubernetes is not configured on this worker: set CONTROLROOM_K8S_NAMESPACE "
                 "(see docs/operations.md, Kubernetes Jobs)")


def executor(settings: Settings, kube_client: Any = None, sandbox: Any = None) -> Any:
    """Local processes (in `sandbox` if given), and Kubernetes Jobs once a namespace is
    configured; per run's spec.executor."""
    from controlroom.adapters.execution.local_executor import LocalExecutor
    from controlroom.adapters.execution.routing_executor import RoutingExecutor

    executors: dict[str, Any] = {"local": LocalExecutor(sandbox=sandbox)}
    unavailable = {"kubernetes": NO_KUBERNETES}
    if settings.k8s.namespace:
        from controlroom.adapters.kubernetes.executor import KubernetesExecutor, api_client

        try:
            client = kube_client or api_client(settings.k8s.context)
        except Exception as e:  # no in-cluster service account and no usable kubeconfig
            log.error("Kubernetes executor unavailable: %s", e)
            unavailable["kubernetes"] = f"this worker could not load a Kubernetes configuration: {e}"
        else:
            executors["kubernetes"] = KubernetesExecutor(client, settings.k8s)
    return RoutingExecutor(executors, settings.executor, unavailable)


def artifact_store(settings: Settings) -> Any:
    """Files under the data dir, or an S3-compatible bucket when CONTROLROOM_ARTIFACT_STORE says so."""
    from controlroom.adapters.artifacts.local_store import LocalArtifactStore

    if settings.artifact_store:
        from controlroom.adapters.artifacts.s3_store import S3ArtifactStore

        return S3ArtifactStore(settings.artifact_store, endpoint=settings.s3_endpoint,
                               spool_dir=settings.data_dir / "artifact-spool")
    return LocalArtifactStore(settings.data_dir / "artifacts")


def run_tokens(services: Services) -> Any:
    from controlroom.adapters.runs.tokens import HmacRunTokens

    s = services.settings
    return HmacRunTokens(services.jwt_secret, audience=s.jwt_audience, issuer=s.jwt_issuer)


def _wire_connections(services: Services, app: Any, box: Any) -> None:
    """Tenant connections: commands for the API and CLI, the store job types resolve with."""
    from controlroom.adapters.connections import ConnectionStore
    from controlroom.commands.connections import ConnectionCommands

    services.connections = ConnectionCommands(app, box)
    services.connection_store = ConnectionStore(services.operations, box)


def _wire_api_keys(services: Services, app: Any) -> None:
    """API keys: commands for the API and CLI, blocking reads for the CLI."""
    from controlroom.adapters.api_keys import ApiKeyStore
    from controlroom.commands.api_keys import ApiKeyCommands

    services.api_keys = ApiKeyCommands(app)
    services.api_key_store = ApiKeyStore(services.dsn)


def _wire_webhooks(services: Services, app: Any, box: Any) -> None:
    """Webhook secrets and subscriptions, inbound outcomes, and the SSRF guard."""
    from types import SimpleNamespace

    from controlroom.adapters.webhooks.ssrf import CallbackGuard
    from controlroom.commands.webhooks.handlers import WebhookCommands
    from controlroom.commands.webhooks.inbound import InboundOutcomes

    s = services.settings.webhooks
    services.webhooks = SimpleNamespace(
        commands=WebhookCommands(app, box, grace_s=s.secret_grace_s),
        outcomes=InboundOutcomes(services.commands), guard=CallbackGuard(s.callback_allowlist),
        box=box,
    )

