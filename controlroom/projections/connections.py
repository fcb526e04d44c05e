"""`connections` read model: one row per tenant connection, DSN sealed, display form masked."""

from __future__ import annotations

from typing import Any

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from controlroom.domain.connections import Connection
from controlroom.projections.view import ReadModelView

UPSERT = """
INSERT INTO connections (tenant_id, name, sealed_dsn, display_dsn, created_at, updated_at,
    updated_by, last_position)
VALUES (%(tenant_id)s, %(name)s, %(sealed_dsn)s, %(display_dsn)s, %(created_at)s, %(at)s,
    %(by)s, %(position)s)
ON CONFLICT (tenant_id, name) DO UPDATE SET
    sealed_dsn = EXCLUDED.sealed_dsn, display_dsn = EXCLUDED.display_dsn,
    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
    updated_by = EXCLUDED.updated_by, last_position = EXCLUDED.last_position
WHERE connections.last_position < EXCLUDED.last_position
"""
DELETE = "DELETE FROM connections WHERE tenant_id = %(tenant_id)s AND name = %(name)s"


class ConnectionsView(ReadModelView):
    """Writes for the connections table."""

    projection_name = "connections"
    tables = ("connections",)

    def change(self, sql: str, tracking: Tracking, **params: Any) -> None:
        """Apply one statement with the event's position filled in."""
        self.apply(tracking, [(sql, {**params, "position": tracking.notification_id})])


# eventsourcing bounds a projection's view by TrackingRecorder; a ReadModelView is none (the
# pipeline records its position with the batch it writes in).
class ConnectionsProjection(Projection[ConnectionsView]):  # type: ignore[type-var]
    """Folds ConnectionSet / ConnectionDeleted into the connections table."""

    name = "connections"
    topics = (get_topic(Connection.ConnectionSet), get_topic(Connection.ConnectionDeleted))

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Other events only advance the position."""
        self.view.apply(tracking)

    @process_event.register
    def _(self, e: Connection.ConnectionSet, tracking: Tracking) -> None:
        self.view.change(
            UPSERT, tracking, tenant_id=e.tenant_id, name=e.name, sealed_dsn=e.sealed_dsn,
            display_dsn=e.display_dsn, created_at=e.created_at, at=e.at, by=e.by,
        )

    @process_event.register
    def _(self, e: Connection.ConnectionDeleted, tracking: Tracking) -> None:
        self.view.change(DELETE, tracking, tenant_id=e.tenant_id, name=e.name)
