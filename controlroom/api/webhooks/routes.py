"""Webhook secret, subscriptions, replay, and each run's delivery log."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, QueryParameter

from controlroom.api.auth import Principal, requires
from controlroom.api.deps import Deps
from controlroom.api.gate.no_body import refuse_fields
from controlroom.api.problems import ProblemError, from_decode_error, invalid
from controlroom.api.views import API
from controlroom.api.webhooks.deps import WebhookDeps
from controlroom.api.webhooks.schemas import (
    AttemptView,
    DeliveryList,
    DeliveryView,
    NewSubscription,
    Replay,
    SecretView,
    SubscriptionList,
    SubscriptionView,
)
from controlroom.commands.errors import RunNotFoundError
from controlroom.commands.webhooks.handlers import SubscriptionNotFoundError
from controlroom.domain.webhooks.rules import webhook_id
from controlroom.domain.webhooks.subscription import check_events

WRITE = "webhooks:write"
WEBHOOKS = "webhooks"
_decode_subscription = msgspec.json.Decoder(NewSubscription)


class DeliveryNotFoundError(ProblemError):
    """No such delivery for this tenant."""

    def __init__(self, delivery_id: UUID) -> None:
        super().__init__(404, "Delivery not found", f"delivery {delivery_id} not found")


def webhooks_of(request: Request[Any, Any, Any]) -> WebhookDeps:
    """The webhook dependencies (the composition root must wire them)."""
    deps: Deps = request.app.state.deps
    if deps.webhooks is None:
        raise RuntimeError("no WebhookDeps were given to Deps")
    return deps.webhooks


async def check_url(hooks: WebhookDeps, field: str, url: str) -> None:
    """422 naming `field` unless the SSRF guard accepts `url`."""
    reason = await hooks.guard.refusal(url)
    if reason is not None:
        raise invalid(field, reason)


@post(f"{API}/webhooks/secret", guards=[requires(WRITE)], status_code=201)
async def rotate_secret(request: Request[Principal, str, Any]) -> SecretView:
    """A new signing secret for the tenant, shown once; the old one stays valid for the grace period."""
    await refuse_fields(request)
    deps: Deps = request.app.state.deps
    rotated = await deps.write(webhooks_of(request).commands.rotate_secret, request.user.tenant_id)
    await deps.settle(rotated.position, WEBHOOKS)
    return SecretView(rotated.secret, rotated.previous_valid_until)


@post(f"{API}/webhooks/subscriptions", guards=[requires(WRITE)], status_code=201)
async def create_subscription(request: Request[Principal, str, Any]) -> Response[SubscriptionView]:
    """Subscribe a URL to the tenant's events (signed, retried and logged like run callbacks)."""
    deps: Deps = request.app.state.deps
    hooks = webhooks_of(request)
    try:
        body = _decode_subscription.decode(await request.body())
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise from_decode_error(e) from None
    check_events(body.events)
    await check_url(hooks, "url", body.url)
    saved = await deps.write(hooks.commands.create_subscription, request.user.tenant_id, body.url,
                             body.events, request.user.sub)
    await deps.settle(saved.position, WEBHOOKS)
    view = SubscriptionView(str(saved.subscription_id), saved.url, saved.events, "active", None,
                            request.user.sub, saved.created_at)
    return Response(view, status_code=201, headers={
        "Location": f"{API}/webhooks/subscriptions/{saved.subscription_id}"})


def _subscription(row: Mapping[str, Any]) -> SubscriptionView:
    return SubscriptionView(str(row["subscription_id"]), row["url"], list(row["events"]),
                            row["status"], row["status_reason"], row["created_by"], row["created_at"])


@get(f"{API}/webhooks/subscriptions", guards=[requires(WRITE)])
async def list_subscriptions(request: Request[Principal, str, Any]) -> SubscriptionList:
    """The tenant's subscriptions, oldest first (deleted ones left out)."""
    rows = await webhooks_of(request).reads.subscriptions(request.user.tenant_id)
    return SubscriptionList([_subscription(r) for r in rows])


@delete(f"{API}/webhooks/subscriptions/{{subscription_id:uuid}}", guards=[requires(WRITE)],
        status_code=204)
async def delete_subscription(request: Request[Principal, str, Any],
                              subscription_id: FromPath[UUID]) -> None:
    """Stop delivering to a subscription; its pending deliveries are cancelled."""
    deps: Deps = request.app.state.deps
    position = await deps.write(webhooks_of(request).commands.delete_subscription,
                                request.user.tenant_id, subscription_id, request.user.sub)
    await deps.settle(position, WEBHOOKS)


@post(f"{API}/webhooks/subscriptions/{{subscription_id:uuid}}/replay", guards=[requires(WRITE)],
      status_code=202)
async def replay_subscription(
    request: Request[Principal, str, Any], subscription_id: FromPath[UUID],
    from_position: Annotated[int, QueryParameter(name="from", ge=0)] = 0,
) -> Replay:
    """Deliver again every event the subscription wants from log position `from` on."""
    await refuse_fields(request)
    hooks = webhooks_of(request)
    tenant = request.user.tenant_id
    row = await hooks.reads.subscription(tenant, subscription_id)
    if row is None:
        raise SubscriptionNotFoundError(subscription_id)
    if row["status"] != "active":
        raise ProblemError(409, "Subscription not active",
                           f"subscription {subscription_id} is {row['status']}: create a new one")
    queued = await hooks.reads.replay(tenant, subscription_id, from_position)
    return Replay(str(subscription_id), from_position, queued)


def _delivery(row: Mapping[str, Any], attempts: list[AttemptView]) -> DeliveryView:
    sub = row["subscription_id"]
    return DeliveryView(
        delivery_id=str(row["delivery_id"]), webhook_id=webhook_id(row["delivery_id"]),
        event_type=row["event_type"], position=row["position"], target=row["target"],
        subscription_id=str(sub) if sub else None, url=row["url"], status=row["status"],
        attempts=attempts,
        next_retry_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        last_status_code=row["last_status_code"], last_error=row["last_error"],
        created_at=row["created_at"], delivered_at=row["delivered_at"],
    )


@get(f"{API}/runs/{{run_id:uuid}}/deliveries", guards=[requires("runs:read")])
async def list_deliveries(request: Request[Principal, str, Any], run_id: FromPath[UUID]) -> DeliveryList:
    """Every webhook delivery for the run's events, each with its attempts."""
    found = await webhooks_of(request).reads.deliveries(request.user.tenant_id, run_id)
    if found is None:
        raise RunNotFoundError(run_id)
    rows, attempt_rows = found
    attempts: dict[Any, list[AttemptView]] = defaultdict(list)
    for a in attempt_rows:
        attempts[a["delivery_id"]].append(AttemptView(
            a["attempt"], a["attempted_at"], a["url"], a["status_code"], a["latency_ms"],
            a["error"], a["next_attempt_at"], a["started_at"], a["finished_at"]))
    return DeliveryList(str(run_id), [_delivery(r, attempts[r["delivery_id"]]) for r in rows])


@post(f"{API}/webhooks/deliveries/{{delivery_id:uuid}}/redeliver", guards=[requires(WRITE)],
      status_code=202)
async def redeliver(request: Request[Principal, str, Any], delivery_id: FromPath[UUID]) -> DeliveryView:
    """Send a delivery again now (same webhook-id), with a fresh retry schedule."""
    await refuse_fields(request)
    row = await webhooks_of(request).reads.redeliver(request.user.tenant_id, delivery_id)
    if row is None:
        raise DeliveryNotFoundError(delivery_id)
    return _delivery(row, [])


async def check_callbacks(request: Request[Any, Any, Any], callbacks: Mapping[str, str]) -> None:
    """422 naming `callbacks.<key>` for a callback URL the SSRF guard refuses (submit)."""
    hooks = webhooks_of(request)
    for key, url in callbacks.items():
        await check_url(hooks, f"callbacks.{key}", url)


WEBHOOK_ROUTES = [rotate_secret, create_subscription, list_subscriptions, delete_subscription,
                  replay_subscription, list_deliveries, redeliver]
