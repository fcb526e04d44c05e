"""Telling "the database is away for now" from real failures, and backing off while it is."""

from __future__ import annotations

UNAVAILABLE = frozenset({
    "OperationalError", "InterfaceError", "PoolTimeout", "ConnectionDoesNotExistError",
    "CannotConnectNowError", "TooManyConnectionsError",
})
"""Class names (psycopg, psycopg_pool, eventsourcing, asyncpg): matched by name so the write
side need not import a driver; all mean "try again later", none "this write is wrong"."""
MIN_BACKOFF_S = 0.25
MAX_BACKOFF_S = 5.0


def is_unavailable(exc: BaseException) -> bool:
    """True for errors meaning the database can't be reached or answer right now."""
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & UNAVAILABLE) or isinstance(exc, (ConnectionError, TimeoutError))


class Backoff:
    """Doubling delays between MIN_BACKOFF_S and MAX_BACKOFF_S; reset after a success."""

    def __init__(self) -> None:
        self.delay = 0.0

    def next(self) -> float:
        """The delay before the next try."""
        self.delay = min(max(self.delay * 2, MIN_BACKOFF_S), MAX_BACKOFF_S)
        return self.delay

    def reset(self) -> None:
        """The database answered."""
        self.delay = 0.0
