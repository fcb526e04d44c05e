"""Request and response bodies of the webhook routes (msgspec; snake_case)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from controlroom.commands.webhooks.inbound import Status
from controlroom.domain.webhooks.url_policy import MAX_URL_CHARS

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_CHARS)]
MAX_SUMMARY = 64 * 1024
MAX_ARTIFACTS = 1000


class SecretView(msgspec.Struct):
    """POST /api/v1/webhooks/secret — the new secret, shown this once."""

    secret: str
    previous_valid_until: datetime | None


class NewSubscription(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/v1/webhooks/subscriptions."""

    url: Url
    events: Annotated[list[str], msgspec.Meta(min_length=1, max_length=64)]


class SubscriptionView(msgspec.Struct):
    """A subscription: where its events go and whether it is still active."""

    subscription_id: str
    url: str
    events: list[str]
    status: str
    status_reason: str | None
    created_by: str
    created_at: datetime


class SubscriptionList(msgspec.Struct):
    """GET /api/v1/webhooks/subscriptions."""

    subscriptions: list[SubscriptionView]


class Replay(msgspec.Struct):
    """POST …/subscriptions/{id}/replay — how many deliveries were queued again."""

    subscription_id: str
    from_position: int
    queued: int


class AttemptView(msgspec.Struct):
    """One attempt at a delivery."""

    attempt: int
    attempted_at: datetime
    """When the attempt began (the same as started_at where that is known)."""
    url: str
    status_code: int | None
    latency_ms: float
    error: str | None
    next_retry_at: datetime | None
    started_at: datetime | None = None
    """When the attempt began, before connecting (null for attempts recorded before it was kept)."""
    finished_at: datetime | None = None
    """When it ended: the receiver's status line came, or the attempt failed or timed out."""


class DeliveryView(msgspec.Struct):
    """A message to one target, with every attempt so far."""

    delivery_id: str
    webhook_id: str
    event_type: str
    position: int
    target: str
    subscription_id: str | None
    url: str
    status: str
    attempts: list[AttemptView]
    next_retry_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryList(msgspec.Struct):
    """GET /api/v1/runs/{run_id}/deliveries."""

    run_id: str
    deliveries: list[DeliveryView]


class ReportedArtifact(msgspec.Struct, forbid_unknown_fields=True):
    """An artifact the external runner keeps: a path, where to fetch it, what it knows of it."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    url: Url
    content_type: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    size: Annotated[int, msgspec.Meta(ge=0)] | None = None
    sha256: Annotated[str, msgspec.Meta(min_length=64, max_length=64)] | None = None


ArtifactMention = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_CHARS)]
"""A reported artifact as a string: an absolute URL (an external artifact), or the path of
an artifact the run already has (uploaded or collected)."""


class ContinueReport(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/v1/webhooks/continue — an external runner's report on a run."""

    run_id: str
    status: Status
    summary: Annotated[str, msgspec.Meta(max_length=MAX_SUMMARY)] = ""
    artifacts: Annotated[list[ReportedArtifact | ArtifactMention],
                         msgspec.Meta(max_length=MAX_ARTIFACTS)] = []
    attempt: Annotated[int, msgspec.Meta(ge=1)] | None = None
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    exit_code: int | None = None


class ContinueAccepted(msgspec.Struct):
    """The run after the report was recorded."""

    run_id: str
    status: str
    duplicate: bool = False
