"""Command handlers for tenant connections: seal the DSN, record, return the position."""

from __future__ import annotations

from datetime import datetime

import msgspec
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from controlroom.commands.application import ControlRoom
from controlroom.commands.errors import ConcurrencyError, ConnectionNotFoundError
from controlroom.commands.handlers import Clock, utcnow
from controlroom.commands.ports import SecretBox
from controlroom.domain.connection import Connection, check_name, connection_id, display_form

MAX_CONFLICT_RETRIES = 8
DSN_KEY = "dsn"
"""The key of the DSN inside its sealed box."""


class ConnectionSaved(msgspec.Struct, frozen=True):
    """What setting a connection produced (never the DSN itself)."""

    position: int
    created: bool
    name: str
    display_dsn: str
    created_at: datetime
    updated_at: datetime
    updated_by: str


class ConnectionCommands:
    """Every change to a tenant's connections goes through here."""

    def __init__(self, app: ControlRoom, secrets: SecretBox, *, clock: Clock = utcnow) -> None:
        self.app = app
        self.secrets = secrets
        self.clock = clock

    def set(self, tenant_id: str, name: str, dsn: str, by: str) -> ConnectionSaved:
        """Create or replace connection `name`; setting the same DSN again records nothing."""
        check_name(name)
        display = display_form(dsn)
        for _ in range(MAX_CONFLICT_RETRIES):
            conn = self._load(tenant_id, name) or Connection.create(tenant_id, name)
            created = not conn.exists
            if created or not self._same_dsn(conn, dsn):
                conn.set(sealed_dsn=self.secrets.seal({DSN_KEY: dsn}), display_dsn=display,
                         by=by, now=self.clock())
            position = self._save(conn)
            if position is None:
                continue  # another writer got there first: decide again on fresh state
            assert conn.created_at and conn.updated_at and conn.updated_by
            return ConnectionSaved(position, created, name, display, conn.created_at,
                                   conn.updated_at, conn.updated_by)
        raise ConcurrencyError(f"connection {name!r} is changing too fast; try again")

    def delete(self, tenant_id: str, name: str, by: str) -> int:
        """Remove connection `name`; ConnectionNotFoundError if the tenant has none."""
        for _ in range(MAX_CONFLICT_RETRIES):
            conn = self._load(tenant_id, name)
            if conn is None or not conn.exists:
                raise ConnectionNotFoundError(name)
            conn.delete(by=by, now=self.clock())
            position = self._save(conn)
            if position is not None:
                return position
        raise ConcurrencyError(f"connection {name!r} is changing too fast; try again")

    def _same_dsn(self, conn: Connection, dsn: str) -> bool:
        try:
            return self.secrets.unseal(conn.sealed_dsn or "").get(DSN_KEY) == dsn
        except Exception:  # sealed under another key: treat as a change and re-seal
            return False

    def _load(self, tenant_id: str, name: str) -> Connection | None:
        try:
            conn: Connection = self.app.repository.get(connection_id(tenant_id, name))
        except AggregateNotFoundError:
            return None
        return conn

    def _save(self, conn: Connection) -> int | None:
        """The log position of the change; 0 (nothing to wait for) if nothing changed."""
        if not conn.pending_events:
            # Not the log's head: the connections projection sees only connection events,
            # so it may never reach a later run event's position.
            return 0
        try:
            recordings = self.app.save(conn)
        except IntegrityError:
            return None
        return recordings[-1].notification.id

