"""Errors of the write side, translated to HTTP in one place (api/problems.py).

    CommandError
     ├── RunNotFoundError          no such run for this tenant
     ├── IdempotencyConflictError  same Idempotency-Key, different request
     ├── ConnectionNotFoundError   the tenant has no connection of that name
     ├── ApiKeyNotFoundError       the tenant has no live API key with that id
     └── ConcurrencyError          the run kept changing under us; retry later
"""

from uuid import UUID


class CommandError(Exception):
    """Base of every error raised by a command handler."""


class RunNotFoundError(CommandError):
    """The run does not exist, or belongs to another tenant."""

    def __init__(self, run_id: UUID | str) -> None:
        super().__init__(f"run {run_id} not found")
        self.run_id = str(run_id)


class IdempotencyConflictError(CommandError):
    """An Idempotency-Key was reused with a different request body."""

    def __init__(self, key: str, run_id: UUID) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used for run {run_id} with a different request"
        )
        self.run_id = str(run_id)


class ConcurrencyError(CommandError):
    """Too many concurrent writers on one run; the command was not applied."""


class ConnectionNotFoundError(CommandError):
    """The tenant has no connection with this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"connection {name!r} not found")
        self.name = name


class ApiKeyNotFoundError(CommandError):
    """The tenant has no live API key with this id."""

    def __init__(self, key_id: object) -> None:
        super().__init__(f"API key {key_id} not found")
        self.key_id = str(key_id)
