"""Projection hosts: the read models and background loops, each active in one process at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controlroom.cli.wiring import Services
    from controlroom.projections.host import ProjectionHost

NOT_REBUILDABLE = {
    "webhooks": "its outbox would send every callback ever made again",
    "dispatch": "it would queue every run ever submitted again",
}
"""Projections with effects beyond their tables: replaying them is not a rebuild."""


def _runner(services: Services, projection: Any, view: Any) -> Callable[[], Any]:
    from eventsourcing.projection import ProjectionRunner

    from controlroom.adapters.database import eventsourcing_env
    from controlroom.commands.application import ControlRoom

    env = {
        **eventsourcing_env(services.dsn, for_projection=True,
                            pooler=services.settings.transaction_pooler),
        # The event store exists already; runners creating it concurrently collide on DDL.
        "CONTROLROOM_CREATE_TABLE": "n",
    }
    return lambda: ProjectionRunner(
        application_class=ControlRoom, projection_class=projection, view_class=view, env=env,
    )


def read_model_hosts(services: Services) -> dict[str, ProjectionHost]:
    """The hosts of the read models that can be rebuilt from the log, by projection name."""
    from controlroom.projections.api_keys import ApiKeysProjection, ApiKeysView
    from controlroom.projections.connections import ConnectionsProjection, ConnectionsView
    from controlroom.projections.host import ProjectionHost
    from controlroom.projections.lineage import LineageProjection, LineageView
    from controlroom.projections.rebuild import Rebuild
    from controlroom.projections.run_events import RunEventsProjection, RunEventsView
    from controlroom.projections.run_status import RunStatusProjection, RunStatusView

    pairs = ((RunStatusProjection, RunStatusView), (ConnectionsProjection, ConnectionsView),
             (RunEventsProjection, RunEventsView), (LineageProjection, LineageView),
             (ApiKeysProjection, ApiKeysView))
    return {
        projection.name: ProjectionHost(projection.name, services.dsn,
                                        _runner(services, projection, view),
                                        rebuild=Rebuild(projection.name, view.tables,
                                                        tuple(projection.topics)))
        for projection, view in pairs
    }


def webhook_hosts(services: Services) -> list[ProjectionHost]:
    """The outbox projection and the delivery worker."""
    from controlroom.adapters.webhook_delivery import HttpWebhookSender
    from controlroom.adapters.webhook_store import PostgresDeliveryStore
    from controlroom.commands.deliveries import DeliveryWorker
    from controlroom.domain.webhooks import DeliveryPolicy, parse_schedule
    from controlroom.projections.host import ProjectionHost
    from controlroom.projections.outbox import OutboxProjection, OutboxView

    settings, hooks = services.settings, services.webhooks
    s = settings.webhooks
    store = PostgresDeliveryStore(services.dsn, hooks.box)
    sender = HttpWebhookSender(hooks.guard, timeout_s=s.timeout_s)
    services.closers.extend([store.shutdown, sender.close])
    policy = DeliveryPolicy(parse_schedule(s.retry_schedule)) if s.retry_schedule else DeliveryPolicy()
    outbox = OutboxProjection.linking_to(settings.base_url)
    return [
        ProjectionHost("webhooks", services.dsn, _runner(services, outbox, OutboxView)),
        ProjectionHost("webhook_delivery", services.dsn, lambda: DeliveryWorker(
            store, sender, hooks.commands, policy, concurrency=s.concurrency,
            per_endpoint=s.per_endpoint)),
    ]


def dispatch_hosts(services: Services, queue: Any, leases: Any) -> list[ProjectionHost]:
    """The dispatcher feeding `queue` from the log, and the reaper of lost runs."""
    from eventsourcing.postgres import PostgresTrackingRecorder

    from controlroom.commands.reaper import Reaper
    from controlroom.projections.dispatch import DispatchProjection
    from controlroom.projections.host import ProjectionHost

    timeout_s = services.settings.lease_timeout_s
    grace_s = services.settings.lease_reap_grace_s
    return [
        ProjectionHost("dispatch", services.dsn, _runner(
            services, DispatchProjection.feeding(queue), PostgresTrackingRecorder)),
        ProjectionHost("reaper", services.dsn, lambda: Reaper(
            services.commands, leases, leases, queue, lease_timeout_s=timeout_s,
            reap_grace_s=grace_s)),
    ]
