"""Ports the write side and the worker need from the outside world."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Protocol
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

    def cleanup(self) -> None:
        """Remove whatever the execution left behind."""
        ...


class Executor(Protocol):
    """Starts job processes."""

    def launch(
        self, *, files: dict[str, str], entrypoint: str, env: dict[str, str]
    ) -> Execution: ...
