"""The WebhookSecret aggregate: a tenant's signing secret, only ever sealed, with a rotation grace.

After a rotation the previous secret stays valid for a grace period: outbound webhooks carry
signatures by both, and inbound ones verify with either, so receivers can switch at leisure.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event


def secret_id(tenant_id: str) -> UUID:
    """The id of a tenant's webhook secret (one per tenant)."""
    return uuid5(NAMESPACE_URL, f"controlroom:webhook-secret:{tenant_id}")


class WebhookSecret(Aggregate):
    """A tenant's current sealed secret and, during the grace period, the previous one."""

    class WebhookSecretCreated(Aggregate.Created):
        tenant_id: str

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.sealed_current: str | None = None
        self.sealed_previous: str | None = None
        self.previous_valid_until: datetime | None = None

    @classmethod
    def create(cls, tenant_id: str) -> WebhookSecret:
        """A tenant's secret, not yet set."""
        return cls._create(cls.WebhookSecretCreated, id=secret_id(tenant_id), tenant_id=tenant_id)

    def rotate(self, *, sealed: str, grace_s: float, now: datetime) -> None:
        """Make `sealed` the current secret; the one it replaces stays valid for `grace_s`."""
        previous = self.sealed_current
        until = now + timedelta(seconds=grace_s) if previous and grace_s > 0 else None
        self._rotated(tenant_id=self.tenant_id, sealed_current=sealed,
                      sealed_previous=previous if until else None, previous_valid_until=until,
                      at=now)

    @event("WebhookSecretRotated")
    def _rotated(self, tenant_id: str, sealed_current: str, sealed_previous: str | None,
                 previous_valid_until: datetime | None, at: datetime) -> None:
        self.sealed_current = sealed_current
        self.sealed_previous = sealed_previous
        self.previous_valid_until = previous_valid_until

    if TYPE_CHECKING:
        # Each `@event("...")` method above defines its event class when this class is made,
        # with the method's parameters as its fields. Declared again here, field for field
        # (tests/unit/test_event_declarations.py holds the two together), for type checking.
        class WebhookSecretRotated(Aggregate.Event):
            tenant_id: str
            sealed_current: str
            sealed_previous: str | None
            previous_valid_until: datetime | None
            at: datetime
