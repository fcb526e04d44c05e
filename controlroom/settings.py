"""Settings, read once from the environment (CLI flags override them)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import platformdirs

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_WORKER_SLOTS = 2
DEFAULT_TIMEOUT_S = 3600
DEFAULT_TOKEN_TTL_S = 3600
DEFAULT_JWT_MAX_LIFETIME_S = 24 * 3600
DEFAULT_READ_YOUR_WRITES_TIMEOUT_S = 5.0
DEFAULT_WORKER_PROCESSES = 1
DEFAULT_LEASE_TIMEOUT_S = 60.0
DEFAULT_SPOOL_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_REDIS_NAMESPACE = "controlroom"
DEFAULT_MAX_ARTIFACT_BYTES = 1024**3
DEFAULT_SSE_HEARTBEAT_S = 15.0
DEFAULT_SSE_BUFFER = 1000
DEFAULT_DB_READ_POOL = 3
DEFAULT_RUN_CACHE = 512
"""The API's asyncpg pool: one event loop keeps a few connections busy, not more."""
DEFAULT_SHUTDOWN_GRACE_S = 1.5
"""After SIGTERM, requests in flight get this long to finish; then the process exits."""
EXECUTORS = ("local", "kubernetes")
DEFAULT_EXECUTOR = "local"


class Settings(msgspec.Struct, kw_only=True):
    """Everything the service can be configured with."""

    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path
    jwt_secret: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_max_lifetime_s: int = DEFAULT_JWT_MAX_LIFETIME_S
    """A user token's exp may be at most this far after its iat (run tokens and API keys exempt)."""
    jwks_url: str | None = None
    """Where RS256/ES256 signing keys are published; unset: only HS256 tokens."""
    secret_key: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    worker_slots: int = DEFAULT_WORKER_SLOTS
    public_url: str | None = None
    transaction_pooler: bool = False
    worker_processes: int = DEFAULT_WORKER_PROCESSES
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S
    lease_renew_s: float | None = None
    """Unset: a sixth of the lease timeout (see controlroom.commands.reaper.LeaseTiming)."""
    lease_reap_grace_s: float | None = None
    """Unset: one lease timeout past a lease's expiry before the reaper fails the attempt."""
    db_read_pool: int = DEFAULT_DB_READ_POOL
    db_write_pool: int | None = None
    """Unset: 2, or 1 in a `projector` (see controlroom/cli/budget.py)."""
    db_operations_pool: int | None = None
    """Unset: 2 in a `serve` with both a worker and the read models, else 1."""
    run_cache: int = DEFAULT_RUN_CACHE
    """Runs kept in memory per process for writes (each checked against the log before use); 0: none."""
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    """Per running job: output waiting on the worker's disk for the database (docs/operations.md)."""
    redis_namespace: str = DEFAULT_REDIS_NAMESPACE
    webhooks: WebhookSettings = msgspec.field(default_factory=lambda: WebhookSettings())
    artifact_store: str | None = None
    """`s3://bucket/prefix` for an S3-compatible store; unset: files under the data dir."""
    s3_endpoint: str | None = None
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    sse_heartbeat_s: float = DEFAULT_SSE_HEARTBEAT_S
    sse_buffer: int = DEFAULT_SSE_BUFFER
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    executor: str = DEFAULT_EXECUTOR
    """Where runs without `spec.executor` run: `local` or `kubernetes`."""
    k8s: KubernetesSettings = msgspec.field(default_factory=lambda: KubernetesSettings())
    sandbox: SandboxSettings = msgspec.field(default_factory=lambda: SandboxSettings())

    @property
    def executors(self) -> tuple[str, ...]:
        """The executors this deployment offers (Kubernetes once a namespace is configured)."""
        return EXECUTORS if self.k8s.namespace else ("local",)

    @property
    def embedded(self) -> bool:
        """True when the service brings its own PostgreSQL."""
        return not self.database_url

    @property
    def base_url(self) -> str:
        """How jobs and clients reach this service."""
        return self.public_url or f"http://{self.host}:{self.port}"


def default_data_dir() -> Path:
    """The user's data directory for Control Room."""
    return Path(platformdirs.user_data_dir("controlroom", appauthor=False))


def from_env(env: dict[str, str] | None = None) -> Settings:
    """Settings from environment variables (DESIGN.md §6)."""
    env = dict(os.environ if env is None else env)
    return Settings(
        database_url=env.get("DATABASE_URL") or None,
        redis_url=env.get("REDIS_URL") or None,
        data_dir=Path(env.get("CONTROLROOM_DATA_DIR") or default_data_dir()),
        jwt_secret=env.get("CONTROLROOM_JWT_SECRET") or None,
        jwt_audience=env.get("CONTROLROOM_JWT_AUDIENCE") or None,
        jwt_issuer=env.get("CONTROLROOM_JWT_ISSUER") or None,
        jwt_max_lifetime_s=int(env.get("CONTROLROOM_JWT_MAX_LIFETIME_S") or DEFAULT_JWT_MAX_LIFETIME_S),
        jwks_url=env.get("CONTROLROOM_JWKS_URL") or None,
        secret_key=env.get("CONTROLROOM_SECRET_KEY") or None,
        host=env.get("CONTROLROOM_HOST") or DEFAULT_HOST,
        port=int(env.get("CONTROLROOM_PORT") or DEFAULT_PORT),
        max_body_bytes=int(env.get("CONTROLROOM_MAX_BODY_BYTES") or DEFAULT_MAX_BODY_BYTES),
        worker_slots=int(env.get("CONTROLROOM_WORKER_SLOTS") or DEFAULT_WORKER_SLOTS),
        public_url=env.get("CONTROLROOM_PUBLIC_URL") or None,
        transaction_pooler=(env.get("CONTROLROOM_TRANSACTION_POOLER") or "").lower()
        in ("1", "true", "yes"),
        worker_processes=int(env.get("CONTROLROOM_WORKER_PROCESSES") or DEFAULT_WORKER_PROCESSES),
        lease_timeout_s=float(env.get("CONTROLROOM_LEASE_TIMEOUT_S") or DEFAULT_LEASE_TIMEOUT_S),
        lease_renew_s=_float_or_none(env.get("CONTROLROOM_LEASE_RENEW_S")),
        lease_reap_grace_s=_float_or_none(env.get("CONTROLROOM_LEASE_REAP_GRACE_S")),
        db_read_pool=int(env.get("CONTROLROOM_DB_READ_POOL") or DEFAULT_DB_READ_POOL),
        db_write_pool=_int_or_none(env.get("CONTROLROOM_DB_WRITE_POOL")),
        db_operations_pool=_int_or_none(env.get("CONTROLROOM_DB_OPERATIONS_POOL")),
        run_cache=int(env.get("CONTROLROOM_RUN_CACHE") or DEFAULT_RUN_CACHE),
        spool_max_bytes=int(env.get("CONTROLROOM_SPOOL_MAX_BYTES") or DEFAULT_SPOOL_MAX_BYTES),
        redis_namespace=env.get("CONTROLROOM_REDIS_NAMESPACE") or DEFAULT_REDIS_NAMESPACE,
        webhooks=webhook_settings(env),
        artifact_store=env.get("CONTROLROOM_ARTIFACT_STORE") or None,
        s3_endpoint=env.get("CONTROLROOM_S3_ENDPOINT") or None,
        max_artifact_bytes=int(env.get("CONTROLROOM_MAX_ARTIFACT_BYTES") or DEFAULT_MAX_ARTIFACT_BYTES),
        sse_heartbeat_s=float(env.get("CONTROLROOM_SSE_HEARTBEAT_S") or DEFAULT_SSE_HEARTBEAT_S),
        sse_buffer=int(env.get("CONTROLROOM_SSE_BUFFER") or DEFAULT_SSE_BUFFER),
        shutdown_grace_s=float(env.get("CONTROLROOM_SHUTDOWN_GRACE_S") or DEFAULT_SHUTDOWN_GRACE_S),
        executor=executor_setting(env),
        k8s=kubernetes_settings(env),
        sandbox=sandbox_settings(env),
    )


def executor_setting(env: dict[str, str]) -> str:
    """`CONTROLROOM_EXECUTOR`, checked: `local` (default) or `kubernetes`."""
    value = (env.get("CONTROLROOM_EXECUTOR") or DEFAULT_EXECUTOR).strip().lower()
    if value not in EXECUTORS:
        raise ValueError(f"CONTROLROOM_EXECUTOR must be one of {', '.join(EXECUTORS)}, not {value!r}")
    return value


class KubernetesSettings(msgspec.Struct, kw_only=True):
    """Kubernetes Jobs: where they run, with which image and resources, how long they may wait."""

    namespace: str | None = None
    """Unset: no Kubernetes executor."""
    image: str = "controlroom:latest"
    """The project's image (`docker build -t controlroom .`): Python with controlroom installed."""
    service_account: str | None = None
    cpu: str = "1"
    memory: str = "1Gi"
    cpu_limit: str | None = None
    """Unset: the request (`cpu`)."""
    memory_limit: str | None = None
    """Unset: the request (`memory`)."""
    pending_timeout_s: float = 300.0
    """A pod not running this long after its Job was created fails the run with the reason."""
    ttl_after_finished_s: int = 3600
    context: str | None = None
    """A kubeconfig context; unset: in-cluster config, else the kubeconfig's current context."""


def kubernetes_settings(env: dict[str, str]) -> KubernetesSettings:
    """Kubernetes settings from `CONTROLROOM_K8S_*`."""
    default = KubernetesSettings()
    return KubernetesSettings(
        namespace=env.get("CONTROLROOM_K8S_NAMESPACE") or None,
        image=env.get("CONTROLROOM_K8S_IMAGE") or default.image,
        service_account=env.get("CONTROLROOM_K8S_SERVICE_ACCOUNT") or None,
        cpu=env.get("CONTROLROOM_K8S_CPU") or default.cpu,
        memory=env.get("CONTROLROOM_K8S_MEMORY") or default.memory,
        cpu_limit=env.get("CONTROLROOM_K8S_CPU_LIMIT") or None,
        memory_limit=env.get("CONTROLROOM_K8S_MEMORY_LIMIT") or None,
        pending_timeout_s=float(env.get("CONTROLROOM_K8S_PENDING_TIMEOUT_S") or default.pending_timeout_s),
        ttl_after_finished_s=int(env.get("CONTROLROOM_K8S_TTL_S") or default.ttl_after_finished_s),
        context=env.get("CONTROLROOM_K8S_CONTEXT") or None,
    )


class WebhookSettings(msgspec.Struct, kw_only=True):
    """Outbound webhooks: the SSRF allowlist, timeouts, retries, secret rotation."""

    callback_allowlist: str = ""
    retry_schedule: str | None = None
    """Seconds, comma-separated (`0,5,300,…`); unset: Standard Webhooks' schedule up to 24 h."""
    timeout_s: float = 15.0
    """The whole of one attempt: connect, send and the answer's headers together."""
    secret_grace_s: float = 24 * 3600.0
    concurrency: int = 16
    """Attempts in flight per process, in all."""
    per_endpoint: int = 4
    """Attempts in flight per process to one endpoint (scheme, host, port): a slow one holds no more."""


def webhook_settings(env: dict[str, str]) -> WebhookSettings:
    """Webhook settings from `CONTROLROOM_CALLBACK_ALLOWLIST` and `CONTROLROOM_WEBHOOK_*`."""
    default = WebhookSettings()
    return WebhookSettings(
        callback_allowlist=env.get("CONTROLROOM_CALLBACK_ALLOWLIST") or "",
        retry_schedule=env.get("CONTROLROOM_WEBHOOK_RETRY_SCHEDULE") or None,
        timeout_s=float(env.get("CONTROLROOM_WEBHOOK_TIMEOUT_S") or default.timeout_s),
        secret_grace_s=float(env.get("CONTROLROOM_WEBHOOK_SECRET_GRACE_S") or default.secret_grace_s),
        concurrency=int(env.get("CONTROLROOM_WEBHOOK_CONCURRENCY") or default.concurrency),
        per_endpoint=int(env.get("CONTROLROOM_WEBHOOK_PER_ENDPOINT") or default.per_endpoint),
    )


JOB_NETWORKS = ("host", "none")
DEFAULT_JOB_UID_BASE = 1_900_000_000
DEFAULT_JOB_UID_COUNT = 4096
DEFAULT_JOB_MEMORY_BYTES = 8 * 1024**3
DEFAULT_JOB_CPU_S = 4 * 3600
DEFAULT_JOB_MAX_PROCESSES = 1024
DEFAULT_JOB_MAX_OPEN_FILES = 4096
DEFAULT_JOB_MAX_FILE_BYTES = 2 * 1024**3
DEFAULT_JOB_TMP_BYTES = 512 * 1024**2


class SandboxSettings(msgspec.Struct, kw_only=True):
    """Local jobs' sandbox (docs/sandbox.md): their network, ids and limits."""

    network: str = "host"
    """`host`: jobs share the host's network; `none`: only a loopback of their own."""
    uid_base: int = DEFAULT_JOB_UID_BASE
    """As root, attempts run as uids (and gids) `uid_base … uid_base + uid_count - 1`, one each."""
    uid_count: int = DEFAULT_JOB_UID_COUNT
    memory_bytes: int = DEFAULT_JOB_MEMORY_BYTES
    """Address space of each job process (RLIMIT_AS)."""
    cpu_s: int = DEFAULT_JOB_CPU_S
    """CPU seconds of each job process (RLIMIT_CPU)."""
    max_processes: int = DEFAULT_JOB_MAX_PROCESSES
    """Processes and threads of a job (RLIMIT_NPROC of its uid)."""
    max_open_files: int = DEFAULT_JOB_MAX_OPEN_FILES
    max_file_bytes: int = DEFAULT_JOB_MAX_FILE_BYTES
    """Largest file a job can write (RLIMIT_FSIZE)."""
    tmp_bytes: int = DEFAULT_JOB_TMP_BYTES
    """Size of a job's private /tmp (memory-backed)."""
    readonly_paths: tuple[str, ...] = ()
    """More host paths jobs see read-only (e.g. a Spark install), beside the system dirs."""
    unsafe_no_sandbox: bool = False
    """Let workers run jobs unsandboxed on a host that can't sandbox, even with DATABASE_URL."""


def sandbox_settings(env: dict[str, str]) -> SandboxSettings:
    """Sandbox settings from `CONTROLROOM_JOB_*` and `CONTROLROOM_UNSAFE_NO_SANDBOX`."""
    d = SandboxSettings()
    network = (env.get("CONTROLROOM_JOB_NETWORK") or d.network).strip().lower()
    if network not in JOB_NETWORKS:
        raise ValueError(f"CONTROLROOM_JOB_NETWORK must be one of {', '.join(JOB_NETWORKS)}, "
                         f"not {network!r}")
    paths = env.get("CONTROLROOM_JOB_READONLY_PATHS") or ""
    return SandboxSettings(
        network=network,
        uid_base=int(env.get("CONTROLROOM_JOB_UID_BASE") or d.uid_base),
        uid_count=int(env.get("CONTROLROOM_JOB_UID_COUNT") or d.uid_count),
        memory_bytes=int(env.get("CONTROLROOM_JOB_MEMORY_BYTES") or d.memory_bytes),
        cpu_s=int(env.get("CONTROLROOM_JOB_CPU_S") or d.cpu_s),
        max_processes=int(env.get("CONTROLROOM_JOB_MAX_PROCESSES") or d.max_processes),
        max_open_files=int(env.get("CONTROLROOM_JOB_MAX_OPEN_FILES") or d.max_open_files),
        max_file_bytes=int(env.get("CONTROLROOM_JOB_MAX_FILE_BYTES") or d.max_file_bytes),
        tmp_bytes=int(env.get("CONTROLROOM_JOB_TMP_BYTES") or d.tmp_bytes),
        readonly_paths=tuple(p for p in paths.split(os.pathsep) if p),
        unsafe_no_sandbox=(env.get("CONTROLROOM_UNSAFE_NO_SANDBOX") or "").lower()
        in ("1", "true", "yes"),
    )


def _float_or_none(value: str | None) -> float | None:
    return float(value) if value else None


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None
