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
DEFAULT_READ_YOUR_WRITES_TIMEOUT_S = 5.0
DEFAULT_WORKER_PROCESSES = 1
DEFAULT_LEASE_TIMEOUT_S = 60.0
DEFAULT_REDIS_NAMESPACE = "controlroom"


class Settings(msgspec.Struct, kw_only=True):
    """Everything the service can be configured with."""

    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path
    jwt_secret: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    secret_key: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    worker_slots: int = DEFAULT_WORKER_SLOTS
    public_url: str | None = None
    transaction_pooler: bool = False
    worker_processes: int = DEFAULT_WORKER_PROCESSES
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S
    redis_namespace: str = DEFAULT_REDIS_NAMESPACE

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
        redis_namespace=env.get("CONTROLROOM_REDIS_NAMESPACE") or DEFAULT_REDIS_NAMESPACE,
    )
