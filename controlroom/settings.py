"""Settings, read once from the environment (CLI flags override them).

Each setting is declared once below: its field, type, default, environment variable and
meaning. `from_env` and the configuration table in docs/operations.md (`python -m
controlroom.settings_table`) are derived from these declarations.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, get_args

import msgspec
import platformdirs

from controlroom.domain.webhooks.rules import DEFAULT_SCHEDULE_S
from controlroom.settings_env import Env, read

Executor = Literal["local", "kubernetes"]
JobNetwork = Literal["host", "none"]
EXECUTORS: tuple[str, ...] = get_args(Executor)

MiB = 1024**2
GiB = 1024**3


def default_data_dir() -> Path:
    """The user's data directory for Control Room."""
    return Path(platformdirs.user_data_dir("controlroom", appauthor=False))


class WebhookSettings(msgspec.Struct, kw_only=True):
    """Outbound webhooks: the SSRF allowlist, timeouts, retries, secret rotation."""

    callback_allowlist: Annotated[str, Env(
        "CONTROLROOM_CALLBACK_ALLOWLIST",
        "hosts (`hooks.internal`, `.corp.example`), IPs and CIDRs webhooks may reach despite the "
        "SSRF guard")] = ""
    # Kept as written: the delivery host parses it (domain.webhooks.rules.parse_schedule) when it starts.
    retry_schedule: Annotated[str | None, Env(
        "CONTROLROOM_WEBHOOK_RETRY_SCHEDULE",
        "seconds before each webhook attempt, comma-separated (±10 % jitter)",
        unset=f"`{','.join(f'{s:g}' for s in DEFAULT_SCHEDULE_S)}`")] = None
    timeout_s: Annotated[float, Env(
        "CONTROLROOM_WEBHOOK_TIMEOUT_S",
        "a webhook attempt's whole time: connect, send and the answer's headers")] = 15.0
    secret_grace_s: Annotated[float, Env(
        "CONTROLROOM_WEBHOOK_SECRET_GRACE_S",
        "how long a rotated-out secret still signs and verifies")] = 24 * 3600.0
    concurrency: Annotated[int, Env(
        "CONTROLROOM_WEBHOOK_CONCURRENCY", "webhook requests in flight per process, in all")] = 16
    per_endpoint: Annotated[int, Env(
        "CONTROLROOM_WEBHOOK_PER_ENDPOINT",
        "webhook requests in flight per process to one endpoint (scheme, host, port): a slow "
        "one holds no more")] = 4


class KubernetesSettings(msgspec.Struct, kw_only=True):
    """Kubernetes Jobs: where they run, with which image and resources, how long they may wait."""

    namespace: Annotated[str | None, Env(
        "CONTROLROOM_K8S_NAMESPACE",
        "turns the Kubernetes executor on: the namespace its Jobs run in",
        unset="no Kubernetes")] = None
    image: Annotated[str, Env(
        "CONTROLROOM_K8S_IMAGE",
        "the pods' image: Python with controlroom installed (`docker build -t controlroom .`)",
    )] = "controlroom:latest"
    service_account: Annotated[str | None, Env(
        "CONTROLROOM_K8S_SERVICE_ACCOUNT", "the pods' service account",
        unset="the namespace's default")] = None
    cpu: Annotated[str, Env("CONTROLROOM_K8S_CPU", "a pod's CPU request (and limit)")] = "1"
    memory: Annotated[str, Env(
        "CONTROLROOM_K8S_MEMORY", "a pod's memory request (and limit)")] = "1Gi"
    cpu_limit: Annotated[str | None, Env(
        "CONTROLROOM_K8S_CPU_LIMIT", "a CPU limit above the request",
        unset="the request")] = None
    memory_limit: Annotated[str | None, Env(
        "CONTROLROOM_K8S_MEMORY_LIMIT", "a memory limit above the request",
        unset="the request")] = None
    pending_timeout_s: Annotated[float, Env(
        "CONTROLROOM_K8S_PENDING_TIMEOUT_S",
        "a pod not running this long after its Job was created fails the run `pending_timeout`",
    )] = 300.0
    ttl_after_finished_s: Annotated[int, Env(
        "CONTROLROOM_K8S_TTL_S", "`ttlSecondsAfterFinished` of each Job")] = 3600
    context: Annotated[str | None, Env(
        "CONTROLROOM_K8S_CONTEXT", "kubeconfig context (skips the in-cluster configuration)",
        unset="in-cluster, else the kubeconfig's current context")] = None


class SandboxSettings(msgspec.Struct, kw_only=True):
    """Local jobs' sandbox (docs/sandbox.md): their network, ids and limits."""

    network: Annotated[JobNetwork, Env(
        "CONTROLROOM_JOB_NETWORK",
        "`host`: local jobs share the host's network; `none`: only a loopback of their own",
    )] = "host"
    uid_base: Annotated[int, Env(
        "CONTROLROOM_JOB_UID_BASE",
        "as root, attempts run as uids (and gids) from this one on, one each")] = 1_900_000_000
    uid_count: Annotated[int, Env(
        "CONTROLROOM_JOB_UID_COUNT", "how many uids attempts take turns with")] = 4096
    memory_bytes: Annotated[int, Env(
        "CONTROLROOM_JOB_MEMORY_BYTES", "address space of each job process (`RLIMIT_AS`)")] = 8 * GiB
    cpu_s: Annotated[int, Env(
        "CONTROLROOM_JOB_CPU_S", "CPU seconds of each job process (`RLIMIT_CPU`)")] = 4 * 3600
    max_processes: Annotated[int, Env(
        "CONTROLROOM_JOB_MAX_PROCESSES",
        "processes and threads of a job (`RLIMIT_NPROC` of its uid)")] = 1024
    max_open_files: Annotated[int, Env(
        "CONTROLROOM_JOB_MAX_OPEN_FILES", "open files of each job process (`RLIMIT_NOFILE`)")] = 4096
    max_file_bytes: Annotated[int, Env(
        "CONTROLROOM_JOB_MAX_FILE_BYTES", "largest file a job can write (`RLIMIT_FSIZE`)")] = 2 * GiB
    tmp_bytes: Annotated[int, Env(
        "CONTROLROOM_JOB_TMP_BYTES", "size of a job's private, memory-backed `/tmp`")] = 512 * MiB
    readonly_paths: Annotated[tuple[str, ...], Env(
        "CONTROLROOM_JOB_READONLY_PATHS",
        "more host paths jobs see read-only (e.g. a Spark install), separated as in `PATH`, "
        "beside the system dirs")] = ()
    unsafe_no_sandbox: Annotated[bool, Env(
        "CONTROLROOM_UNSAFE_NO_SANDBOX",
        "`1`: workers run jobs unsandboxed on a host that can't sandbox, even with `DATABASE_URL`",
    )] = False


class Settings(msgspec.Struct, kw_only=True):
    """Everything the service can be configured with."""

    database_url: Annotated[str | None, Env(
        "DATABASE_URL", "PostgreSQL for events and read models",
        unset="embedded PostgreSQL")] = None
    data_dir: Annotated[Path, Env(
        "CONTROLROOM_DATA_DIR", "embedded database, generated keys, local artifacts, the spool",
        unset="the user's data dir (`~/.local/share/controlroom`)", fallback=default_data_dir)]
    host: Annotated[str, Env("CONTROLROOM_HOST", "the interface the API listens on")] = "127.0.0.1"
    port: Annotated[int, Env("CONTROLROOM_PORT", "the port the API listens on")] = 8000
    public_url: Annotated[str | None, Env(
        "CONTROLROOM_PUBLIC_URL", "URL jobs use to reach the API",
        unset="`http://HOST:PORT`")] = None
    jwt_secret: Annotated[str | None, Env(
        "CONTROLROOM_JWT_SECRET", "HS256 key", unset="generated into the data dir")] = None
    jwks_url: Annotated[str | None, Env(
        "CONTROLROOM_JWKS_URL",
        "JWKS of your identity provider: RS256/ES256 tokens are verified with its keys",
        unset="HS256 tokens and API keys only")] = None
    jwt_audience: Annotated[str | None, Env(
        "CONTROLROOM_JWT_AUDIENCE", "`aud` every JWT must carry", unset="not checked")] = None
    jwt_issuer: Annotated[str | None, Env(
        "CONTROLROOM_JWT_ISSUER", "`iss` every JWT must carry", unset="not checked")] = None
    jwt_max_lifetime_s: Annotated[int, Env(
        "CONTROLROOM_JWT_MAX_LIFETIME_S",
        "how far after its `iat` a user token's `exp` may be (run tokens and API keys exempt)",
    )] = 24 * 3600
    secret_key: Annotated[str | None, Env(
        "CONTROLROOM_SECRET_KEY", "key sealing submitted secrets and connections",
        unset="generated into the data dir")] = None
    max_body_bytes: Annotated[int, Env(
        "CONTROLROOM_MAX_BODY_BYTES", "request size limit")] = 10 * MiB
    worker_slots: Annotated[int, Env(
        "CONTROLROOM_WORKER_SLOTS", "jobs a worker (process) runs at once")] = 2
    worker_processes: Annotated[int, Env(
        "CONTROLROOM_WORKER_PROCESSES",
        "processes `controlroom worker` runs (needs `REDIS_URL` above 1)")] = 1
    redis_url: Annotated[str | None, Env(
        "REDIS_URL",
        "dramatiq's broker: runs are queued in Redis for `controlroom worker` processes anywhere",
        unset="in-process queue and worker")] = None
    redis_namespace: Annotated[str, Env(
        "CONTROLROOM_REDIS_NAMESPACE",
        "prefix of every Redis key (one per deployment sharing a Redis)")] = "controlroom"
    # The timings' checks and derived defaults: controlroom.commands.execution.reaper.LeaseTiming.
    lease_timeout_s: Annotated[float, Env(
        "CONTROLROOM_LEASE_TIMEOUT_S",
        "a running attempt whose worker stops renewing its lease this long (plus the reaper's "
        "grace) is failed `worker_lost`")] = 60.0
    lease_renew_s: Annotated[float | None, Env(
        "CONTROLROOM_LEASE_RENEW_S",
        "how often a worker renews a lease; at most a third of (timeout - timeout/6), or start "
        "is refused", unset="timeout / 6")] = None
    lease_reap_grace_s: Annotated[float | None, Env(
        "CONTROLROOM_LEASE_REAP_GRACE_S",
        "how long past a lease's expiry the reaper waits; at least timeout / 2, and with the "
        "margin over 3 s, or start is refused", unset="timeout")] = None
    spool_max_bytes: Annotated[int, Env(
        "CONTROLROOM_SPOOL_MAX_BYTES",
        "output a running job may have waiting on the worker's disk while the database is away; "
        "past it the oldest log text gives way to a marker line "
        "([the worker's spool](#the-workers-spool))")] = 64 * MiB
    transaction_pooler: Annotated[bool, Env(
        "CONTROLROOM_TRANSACTION_POOLER",
        "`1`: `DATABASE_URL` is a transaction-mode pooler", unset="on for port 6543")] = False
    # Pool sizes left unset are chosen per process kind: controlroom/cli/budget.py.
    db_write_pool: Annotated[int | None, Env(
        "CONTROLROOM_DB_WRITE_POOL",
        "connections of the write side's pool ([the budget](#connections-the-budget-of-each-process))",
        unset="2 (1 in a `projector`)")] = None
    db_read_pool: Annotated[int, Env(
        "CONTROLROOM_DB_READ_POOL",
        "connections of the API's read pool (one event loop keeps a few busy, not more)")] = 3
    db_operations_pool: Annotated[int | None, Env(
        "CONTROLROOM_DB_OPERATIONS_POOL", "connections for leases, webhook deliveries and lookups",
        unset="2 in a `serve` with worker and read models, else 1")] = None
    run_cache: Annotated[int, Env(
        "CONTROLROOM_RUN_CACHE",
        "runs each process keeps in memory for writes: a write to one of them reads only the "
        "events appended since (by any process), not its snapshot and replay; together they hold "
        "at most 64 MiB of code, the oldest dropped first (0: none)")] = 512
    sse_heartbeat_s: Annotated[float, Env(
        "CONTROLROOM_SSE_HEARTBEAT_S",
        "seconds between `: keepalive` comments on an idle event stream")] = 15.0
    sse_buffer: Annotated[int, Env(
        "CONTROLROOM_SSE_BUFFER",
        "events a stream may have waiting before its client is told to `resume`")] = 1000
    shutdown_grace_s: Annotated[float, Env(
        "CONTROLROOM_SHUTDOWN_GRACE_S",
        "after SIGTERM, how long requests in flight may take to finish")] = 1.5
    artifact_store: Annotated[str | None, Env(
        "CONTROLROOM_ARTIFACT_STORE",
        "`s3://bucket/prefix`: keep artifacts in an S3-compatible store (credentials from `AWS_*`)",
        unset="files under `<data dir>/artifacts`")] = None
    s3_endpoint: Annotated[str | None, Env(
        "CONTROLROOM_S3_ENDPOINT", "the S3 endpoint of a non-AWS store (Supabase Storage, MinIO)",
        unset="AWS")] = None
    max_artifact_bytes: Annotated[int, Env(
        "CONTROLROOM_MAX_ARTIFACT_BYTES", "largest artifact upload")] = GiB
    webhooks: WebhookSettings = msgspec.field(default_factory=lambda: WebhookSettings())
    executor: Annotated[Executor, Env(
        "CONTROLROOM_EXECUTOR", "where runs without `spec.executor` run: `local` or `kubernetes`",
    )] = "local"
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


def from_env(env: dict[str, str] | None = None) -> Settings:
    """Settings from environment variables (docs/operations.md#configuration)."""
    settings: Settings = read(Settings, dict(os.environ if env is None else env))
    return settings
