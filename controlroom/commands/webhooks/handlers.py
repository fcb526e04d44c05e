"""Command handlers for tenant webhook secrets and subscriptions: decide, record, return the position."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar
from uuid import UUID, uuid4

import msgspec
from eventsourcing.domain import Aggregate

from controlroom.commands.application import ControlRoom
from controlroom.commands.errors import CommandError
from controlroom.commands.ports import SecretBox
from controlroom.commands.runs.handlers import Clock, utcnow
from controlroom.commands.updates import or_created, update
from controlroom.domain.webhooks.secret import WebhookSecret, secret_id
from controlroom.domain.webhooks.subscription import Subscription

SECRET_BYTES = 32
SECRET_KEY = "whsec"
"""The key of the secret inside its sealed box."""
DEFAULT_GRACE_S = 24 * 3600.0
A = TypeVar("A", bound=Aggregate)


class SubscriptionNotFoundError(CommandError):
    """The tenant has no subscription with this id."""

    def __init__(self, subscription_id: UUID | str) -> None:
        super().__init__(f"subscription {subscription_id} not found")


class SecretRotated(msgspec.Struct, frozen=True):
    """A new secret: shown once, to whoever rotated it."""

    secret: str
    position: int
    previous_valid_until: datetime | None


class SubscriptionSaved(msgspec.Struct, frozen=True):
    """What creating a subscription recorded."""

    subscription_id: UUID
    position: int
    url: str
    events: list[str]
    created_at: datetime


def new_secret() -> str:
    """A fresh `whsec_…` secret (base64 of 32 random bytes), as Standard Webhooks formats them."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class WebhookCommands:
    """Every change to a tenant's webhook secret and subscriptions goes through here."""

    def __init__(
        self, app: ControlRoom, box: SecretBox, *, clock: Clock = utcnow,
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        self.app = app
        self.box = box
        self.clock = clock
        self.grace_s = grace_s

    def rotate_secret(self, tenant_id: str) -> SecretRotated:
        """A new signing secret for the tenant; the previous one stays valid for the grace period."""
        secret = new_secret()
        sealed = self.box.seal({SECRET_KEY: secret})

        def decide(agg: WebhookSecret) -> None:
            agg.rotate(sealed=sealed, grace_s=self.grace_s, now=self.clock())

        agg, position = self._change(secret_id(tenant_id), lambda: WebhookSecret.create(tenant_id),
                                     decide)
        return SecretRotated(secret, position, agg.previous_valid_until)

    def create_subscription(self, tenant_id: str, url: str, events: list[str], by: str) -> SubscriptionSaved:
        """A new subscription (its URL already checked against the SSRF guard)."""
        sub = Subscription.create(subscription_id=uuid4(), tenant_id=tenant_id, url=url,
                                  events=events, by=by, now=self.clock())
        position = self.app.save(sub)[-1].notification.id
        return SubscriptionSaved(sub.id, position, sub.url, sub.events, sub.created_at)

    def delete_subscription(self, tenant_id: str, subscription_id: UUID, by: str) -> int:
        """Stop delivering to a subscription; SubscriptionNotFoundError if not the tenant's."""
        return self._subscription(tenant_id, subscription_id,
                                  lambda sub: sub.delete(by=by, now=self.clock()))

    def disable_subscription(self, tenant_id: str, subscription_id: UUID, reason: str) -> int:
        """The receiver answered 410 Gone: deliver nothing more to it."""
        return self._subscription(tenant_id, subscription_id,
                                  lambda sub: sub.disable(reason=reason, now=self.clock()))

    def _subscription(self, tenant_id: str, subscription_id: UUID,
                      decide: Callable[[Subscription], None]) -> int:
        def missing() -> Subscription:
            raise SubscriptionNotFoundError(subscription_id)

        def checked(sub: Subscription) -> None:
            if sub.tenant_id != tenant_id or not sub.exists:
                raise SubscriptionNotFoundError(subscription_id)
            decide(sub)

        return self._change(subscription_id, missing, checked)[1]

    def _change(self, agg_id: UUID, create: Callable[[], A], decide: Callable[[A], None]) -> tuple[A, int]:
        agg, position = update(self.app, agg_id, decide, load=or_created(self.app, create))
        return agg, position or 0  # nothing changed: nothing to wait for
