"""The Subscription aggregate: a tenant's standing request to be told about events by webhook."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from controlroom.domain.errors import DomainError
from controlroom.domain.webhooks.rules import EVENT_TYPES

ACTIVE, DISABLED, DELETED = "active", "disabled", "deleted"


class InvalidSubscriptionError(DomainError):
    """A subscription that can't be accepted; names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_events(events: list[str]) -> list[str]:
    """The event types, de-duplicated in order; InvalidSubscriptionError naming a bad one."""
    if not events:
        raise InvalidSubscriptionError("events", "must name at least one event type")
    for i, name in enumerate(events):
        if name not in EVENT_TYPES:
            raise InvalidSubscriptionError(f"events[{i}]", f"unknown event type {name!r}; one of "
                                           + ", ".join(EVENT_TYPES))
    return list(dict.fromkeys(events))


class Subscription(Aggregate):
    """Where to POST which events of a tenant; disabled by a 410 from its receiver."""

    class SubscriptionCreated(Aggregate.Created):
        tenant_id: str
        url: str
        events: list[str]
        created_by: str
        created_at: datetime

    def __init__(
        self, tenant_id: str, url: str, events: list[str], created_by: str, created_at: datetime
    ) -> None:
        self.tenant_id = tenant_id
        self.url = url
        self.events = events
        self.created_by = created_by
        self.created_at = created_at
        self.status = ACTIVE

    @classmethod
    def create(
        cls, *, subscription_id: UUID, tenant_id: str, url: str, events: list[str], by: str,
        now: datetime,
    ) -> Subscription:
        """A new active subscription (the URL was checked by the caller)."""
        return cls._create(cls.SubscriptionCreated, id=subscription_id, tenant_id=tenant_id,
                           url=url, events=check_events(events), created_by=by, created_at=now)

    @property
    def exists(self) -> bool:
        """False once deleted."""
        return self.status != DELETED

    def delete(self, *, by: str, now: datetime) -> None:
        """Stop delivering to this subscription for good."""
        if self.exists:
            self._deleted(tenant_id=self.tenant_id, by=by, at=now)

    def disable(self, *, reason: str, now: datetime) -> None:
        """The receiver said it's gone (410): stop delivering; a no-op unless active."""
        if self.status == ACTIVE:
            self._disabled(tenant_id=self.tenant_id, reason=reason, at=now)

    @event("SubscriptionDeleted")
    def _deleted(self, tenant_id: str, by: str, at: datetime) -> None:
        self.status = DELETED

    @event("SubscriptionDisabled")
    def _disabled(self, tenant_id: str, reason: str, at: datetime) -> None:
        self.status = DISABLED

    if TYPE_CHECKING:
        # Each `@event("...")` method above defines its event class when this class is made,
        # with the method's parameters as its fields. Declared again here, field for field
        # (tests/unit/test_event_declarations.py holds the two together), for type checking.
        class SubscriptionDeleted(Aggregate.Event):
            tenant_id: str
            by: str
            at: datetime

        class SubscriptionDisabled(Aggregate.Event):
            tenant_id: str
            reason: str
            at: datetime
