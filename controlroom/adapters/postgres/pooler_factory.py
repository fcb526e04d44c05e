"""Event-store persistence that works through a transaction-mode pooler (pgbouncer, Supavisor).

Such poolers hand each transaction to any server connection, so server-side prepared
statements made on one are missing on the next; psycopg must not prepare any.
"""

from __future__ import annotations

from typing import Any

from controlroom.adapters.postgres.event_store import EventStoreFactory


class TransactionPoolerFactory(EventStoreFactory):
    """EventStoreFactory whose connections never prepare statements."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        # The pool opens lazily, so every connection it makes gets this setting.
        kwargs = self.datastore.pool.kwargs
        assert isinstance(kwargs, dict)  # the library gives its pool a dict, never a function
        kwargs["prepare_threshold"] = None
