"""Ports the write side and the worker need from the outside world."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from uuid import UUID


class SecretBox(Protocol):
    """Seals submitted secrets so they are stored only as ciphertext."""

    def seal(self, secrets: dict[str, str]) -> str: ...

    def unseal(self, sealed: str) -> dict[str, str]: ...


class RunQueue(Protocol):
    """Hands runs to workers (at-least-once; workers start idempotently)."""

    def enqueue(self, run_id: UUID, attempt: int, not_before: datetime | None = None) -> None: ...


class Execution(Protocol):
    """One running job process."""

    def lines(self, timeout: float) -> Iterator[tuple[str, str]]:
        """(stream, line) pairs produced within `timeout` seconds."""
        ...

    def poll(self) -> int | None:
        """Exit code once the process has ended, else None."""
        ...

    def kill(self) -> None:
        """Stop the job and everything it started."""
        ...

    def output_files(self) -> Iterator[OutputFile]:
        """Regular files the job wrote under its `output/` dir (symlinks are not followed)."""
        ...

    def cleanup(self) -> None:
        """Remove whatever the execution left behind."""
        ...

    def failure(self) -> tuple[str, str] | None:
        """(reason, message) when the job ended for a reason of the platform's rather than an
        exit code of its own (never scheduled, stopped at a deadline), else None."""
        ...


@dataclass(frozen=True)
class OutputFile:
    """A file a job left in `output/`: its path relative to that dir, where it is, its size."""

    path: str
    file: Path
    size: int


PYTHON = "{python}"
"""Stands for the worker environment's Python interpreter in a Launch's argv."""


@dataclass(frozen=True)
class JobContext:
    """What a job type needs to know to plan one attempt."""

    run_id: UUID
    attempt: int
    tenant_id: str
    job_type: str
    job_name: str
    files: dict[str, str]
    spec: dict[str, Any]
    secrets: dict[str, str]


@dataclass(frozen=True)
class Launch:
    """How to start a job: the command, extra environment, values to scrub from its output."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    redact: list[str] = field(default_factory=list)
    lineage_on_success: list[tuple[str, str]] = field(default_factory=list)


class PlanError(Exception):
    """A job that can't be started as submitted; the run fails with `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class JobPlanner(Protocol):
    """Turns a run into a Launch according to its job type."""

    def plan(self, ctx: JobContext) -> Launch: ...


@dataclass(frozen=True)
class Attempt:
    """Which attempt a launch runs, where the run asked to run it, and for how long at most."""

    run_id: UUID
    attempt: int
    timeout_s: int | None = None
    executor: str | None = None
    """`spec.executor` (`local`, `kubernetes`); None: the worker's default."""
    network: str | None = None
    """`spec.network`: `none` cuts a local job off the network; None: the worker's setting."""


class Executor(Protocol):
    """Starts job processes."""

    def launch(
        self, *, files: dict[str, str], launch: Launch, env: dict[str, str],
        attempt: Attempt | None = None,
    ) -> Execution: ...


class Connections(Protocol):
    """A tenant's named database connections (DSNs are secrets: never log or echo them)."""

    def dsn(self, tenant_id: str, name: str) -> str:
        """The DSN of connection `name`; ConnectionNotFoundError if the tenant has none."""
        ...

    def names(self, tenant_id: str) -> list[str]:
        """Names of the tenant's connections."""
        ...


class ArtifactStore(Protocol):
    """Content-addressed bytes of artifacts."""

    spool_dir: Path
    """Where uploads are written while they arrive (on the store's filesystem when local)."""

    def put_file(self, path: Path) -> tuple[str, int]:
        """Store a file; (sha256 hex, size)."""
        ...

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store bytes held in memory (small: code files, logs); (sha256 hex, size)."""
        ...

    def put_spooled(self, path: Path, sha256: str) -> None:
        """Store a file under `spool_dir` whose digest was computed as it arrived; consumes it."""
        ...

    def open(self, sha256: str) -> BinaryIO:
        """Read stored bytes (seekable); FileNotFoundError if absent."""
        ...


class TokenMinter(Protocol):
    """Issues the short-lived token a job uses to report on its own run only."""

    def for_run(self, tenant_id: str, run_id: UUID, ttl_s: int, *, attempt: int | None = None) -> str:
        """A token confined to `run_id` (and `attempt`), valid for `ttl_s` seconds."""
        ...
