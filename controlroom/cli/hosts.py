"""What a process hosts: read models (fed by one pipeline) and background loops, each active
in one process at a time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controlroom.cli.wiring import Services
    from controlroom.projections.locked_loop import LockedLoopHost
    from controlroom.projections.pipeline import Pipeline, ReadModel

NOT_REBUILDABLE = {
    "webhooks": "its outbox would send every callback ever made again",
    "dispatch": "it would queue every run ever submitted again",
}
"""Projections with effects beyond their tables: replaying them is not a rebuild."""


def read_models(services: Services) -> dict[str, ReadModel]:
    """The read models that can be rebuilt from the log, by projection name."""
    from controlroom.projections.api_keys import ApiKeysProjection, ApiKeysView
    from controlroom.projections.connections import ConnectionsProjection, ConnectionsView
    from controlroom.projections.events import RunEventsProjection, RunEventsView
    from controlroom.projections.lineage import LineageProjection, LineageView
    from controlroom.projections.pipeline import ReadModel
    from controlroom.projections.runs import RunStatusProjection, RunStatusView

    pairs = ((RunStatusProjection, RunStatusView), (ConnectionsProjection, ConnectionsView),
             (RunEventsProjection, RunEventsView), (LineageProjection, LineageView),
             (ApiKeysProjection, ApiKeysView))
    return {projection.name: ReadModel.of(projection, view, rebuildable=True)
            for projection, view in pairs}


def outbox_model(services: Services) -> ReadModel:
    """The webhook outbox: messages and deliveries made from the log (not rebuildable)."""
    from controlroom.projections.pipeline import ReadModel
    from controlroom.projections.webhooks.outbox import OutboxProjection, OutboxView

    return ReadModel.of(OutboxProjection.linking_to(services.settings.base_url), OutboxView)


def dispatch_model(queue: Any) -> ReadModel:
    """The dispatcher feeding `queue` from the log (not rebuildable)."""
    from controlroom.projections.execution import DispatchProjection, DispatchView
    from controlroom.projections.pipeline import ReadModel

    return ReadModel.of(DispatchProjection.feeding(queue), DispatchView)


def pipeline(services: Services, models: Iterable[ReadModel]) -> Pipeline:
    """One reader of the log for `models`, decoding events as the write side stores them."""
    from controlroom.projections.pipeline import Pipeline

    app = services.commands.app
    return Pipeline(services.dsn, services.session(), list(models), app.mapper.to_domain_event,
                    channel=app.recorder.channel_name)


def webhook_hosts(services: Services) -> list[LockedLoopHost]:
    """The webhook deliverer."""
    from controlroom.adapters.webhooks.delivery import HttpWebhookSender
    from controlroom.adapters.webhooks.store import PostgresDeliveryStore
    from controlroom.commands.webhooks.deliveries import WebhookDeliverer
    from controlroom.domain.webhooks.rules import DeliveryPolicy, parse_schedule
    from controlroom.projections.locked_loop import LockedLoopHost
    from controlroom.projections.webhooks.outbox import WEBHOOKS_CHANNEL

    settings, hooks = services.settings, services.webhooks
    s = settings.webhooks
    session = services.session()
    store = PostgresDeliveryStore(services.operations, hooks.box, session.wake_on(WEBHOOKS_CHANNEL))
    sender = HttpWebhookSender(hooks.guard, timeout_s=s.timeout_s)
    services.closers.append(sender.close)
    policy = DeliveryPolicy(parse_schedule(s.retry_schedule)) if s.retry_schedule else DeliveryPolicy()
    return [
        LockedLoopHost("webhook_delivery", session, lambda: WebhookDeliverer(
            store, sender, hooks.commands, policy, concurrency=s.concurrency,
            per_endpoint=s.per_endpoint)),
    ]


def reaper_host(services: Services, queue: Any, leases: Any) -> LockedLoopHost:
    """The reaper of lost runs, feeding the same queue as the dispatcher."""
    from controlroom.commands.execution.reaper import Reaper
    from controlroom.projections.locked_loop import LockedLoopHost

    timeout_s = services.settings.lease_timeout_s
    grace_s = services.settings.lease_reap_grace_s
    return LockedLoopHost("reaper", services.session(), lambda: Reaper(
        services.commands, leases, leases, queue, lease_timeout_s=timeout_s,
        reap_grace_s=grace_s))
