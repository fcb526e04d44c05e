"""Command handlers for tenant connections: seal the DSN, record, return the position."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec

from controlroom.commands.application import ControlRoom
from controlroom.commands.errors import ConnectionNotFoundError
from controlroom.commands.ports import SecretBox
from controlroom.commands.runs.handlers import Clock, utcnow
from controlroom.commands.updates import existing, or_created, update
from controlroom.domain.connections import Connection, check_name, connection_id, display_form

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
        created = False

        def decide(conn: Connection) -> None:
            nonlocal created
            created = not conn.exists
            if created or not self._same_dsn(conn, dsn):
                conn.set(sealed_dsn=self.secrets.seal({DSN_KEY: dsn}), display_dsn=display,
                         by=by, now=self.clock())

        conn, position = self._update(tenant_id, name, decide)
        assert conn.created_at and conn.updated_at and conn.updated_by
        return ConnectionSaved(position, created, name, display, conn.created_at,
                               conn.updated_at, conn.updated_by)

    def delete(self, tenant_id: str, name: str, by: str) -> int:
        """Remove connection `name`; ConnectionNotFoundError if the tenant has none."""

        def decide(conn: Connection) -> None:
            if not conn.exists:
                raise ConnectionNotFoundError(name)
            conn.delete(by=by, now=self.clock())

        # Loaded, never created: a name the tenant never set (even one no connection could
        # have) is simply not there.
        _, position = update(self.app, connection_id(tenant_id, name), decide,
                             load=existing(self.app, Connection, lambda: ConnectionNotFoundError(name)),
                             name=f"connection {name!r}")
        return position or 0

    def _update(self, tenant_id: str, name: str,
                decide: Callable[[Connection], None]) -> tuple[Connection, int]:
        """The connection after `decide` and the position of the change; 0 (nothing to wait
        for) if nothing changed — not the log's head: the connections projection sees only
        connection events, so it may never reach a later run event's position."""
        conn, position = update(self.app, connection_id(tenant_id, name), decide,
                                load=or_created(self.app, lambda: Connection.create(tenant_id, name)),
                                name=f"connection {name!r}")
        return conn, position or 0

    def _same_dsn(self, conn: Connection, dsn: str) -> bool:
        try:
            return self.secrets.unseal(conn.sealed_dsn or "").get(DSN_KEY) == dsn
        except Exception:  # sealed under another key: treat as a change and re-seal
            return False
