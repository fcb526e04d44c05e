"""`api_keys` read model: one row per API key, by hash for lookups; never the key itself."""

from __future__ import annotations

from typing import Any

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from controlroom.domain.api_keys import ApiKey
from controlroom.projections.view import ReadModelView

INSERT = """
INSERT INTO api_keys (id, tenant_id, name, key_hash, last4, scopes, created_by, created_at,
    expires_at, last_position)
VALUES (%(id)s, %(tenant_id)s, %(name)s, %(key_hash)s, %(last4)s, %(scopes)s, %(created_by)s,
    %(created_at)s, %(expires_at)s, %(position)s)
ON CONFLICT (id) DO NOTHING
"""
REVOKE = """
UPDATE api_keys SET revoked_at = %(at)s, revoked_by = %(by)s, last_position = %(position)s
WHERE id = %(id)s AND last_position < %(position)s
"""


class ApiKeysView(ReadModelView):
    """Writes for the api_keys table."""

    projection_name = "api_keys"
    tables = ("api_keys",)

    def change(self, sql: str, tracking: Tracking, **params: Any) -> None:
        """Apply one statement with the event's position filled in."""
        self.apply(tracking, [(sql, {**params, "position": tracking.notification_id})])


# eventsourcing bounds a projection's view by TrackingRecorder; a ReadModelView is none (the
# pipeline records its position with the batch it writes in).
class ApiKeysProjection(Projection[ApiKeysView]):  # type: ignore[type-var]
    """Folds ApiKeyIssued / ApiKeyRevoked into the api_keys table."""

    name = "api_keys"
    topics = (get_topic(ApiKey.ApiKeyIssued), get_topic(ApiKey.ApiKeyRevoked))

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Other events only advance the position."""
        self.view.apply(tracking)

    @process_event.register
    def _(self, e: ApiKey.ApiKeyIssued, tracking: Tracking) -> None:
        self.view.change(
            INSERT, tracking, id=e.originator_id, tenant_id=e.tenant_id, name=e.name,
            key_hash=e.key_hash, last4=e.last4, scopes=list(e.scopes), created_by=e.created_by,
            created_at=e.created_at, expires_at=e.expires_at,
        )

    @process_event.register
    def _(self, e: ApiKey.ApiKeyRevoked, tracking: Tracking) -> None:
        self.view.change(REVOKE, tracking, id=e.originator_id, at=e.at, by=e.by)
