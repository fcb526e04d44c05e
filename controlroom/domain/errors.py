"""Errors the domain raises when a command would break an invariant.

    DomainError
     ├── InvalidTransitionError   the run's state forbids the command
     └── AttemptMismatchError     a worker acts on an attempt that is not the current one
"""


class DomainError(Exception):
    """Base of every error the domain raises."""


class InvalidTransitionError(DomainError):
    """The command is not allowed in the run's current status."""

    def __init__(self, action: str, status: str) -> None:
        super().__init__(f"cannot {action} a run that is {status}")
        self.action = action
        self.status = status


class AttemptMismatchError(DomainError):
    """A worker tried to act on an attempt that is not the run's current one."""

    def __init__(self, attempt: int, current: int) -> None:
        super().__init__(f"attempt {attempt} is not the current attempt ({current})")
        self.attempt = attempt
        self.current = current
