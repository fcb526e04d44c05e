"""`webhooks` projection: the outbox. Run events become messages, fanned out to deliveries.

Each subscribable Run event becomes a row of `webhook_events` (the tenant's replayable feed)
and one `webhook_deliveries` row per target — the run's own callback and every active
subscription wanting it — all with the tracking position in one transaction, so a crash
anywhere re-projects rather than loses a callback. Subscriptions and secrets are folded here
too: fan-out then depends only on the log's order, never on another projection's progress.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic
from psycopg import Cursor
from psycopg.types.json import Jsonb

from controlroom.domain.runs.run import Run
from controlroom.domain.webhooks.secret import WebhookSecret
from controlroom.domain.webhooks.subscription import Subscription
from controlroom.projections.view import ReadModelView, Statement
from controlroom.projections.webhooks.messages import RunFacts, message_for

WEBHOOKS_CHANNEL = "controlroom_webhooks"
"""NOTIFY channel waking webhook deliverers when deliveries were queued."""

GET_FACTS = """SELECT tenant_id, job_type, job_name, callbacks, attempt, started_at, artifacts
FROM webhook_runs WHERE run_id = %s"""
PUT_FACTS = """
INSERT INTO webhook_runs (run_id, tenant_id, job_type, job_name, callbacks, attempt, started_at, artifacts)
VALUES (%(run_id)s, %(tenant_id)s, %(job_type)s, %(job_name)s, %(callbacks)s, %(attempt)s,
    %(started_at)s, %(artifacts)s)
ON CONFLICT (run_id) DO UPDATE SET attempt = EXCLUDED.attempt, started_at = EXCLUDED.started_at,
    artifacts = EXCLUDED.artifacts
"""
INSERT_EVENT = """
INSERT INTO webhook_events (position, tenant_id, run_id, event_type, occurred_at, payload)
VALUES (%(position)s, %(tenant_id)s, %(run_id)s, %(event_type)s, %(at)s, %(payload)s)
ON CONFLICT (position) DO NOTHING
"""
FAN_OUT = f"""
WITH targets (delivery_id, target, subscription_id, url) AS (
    SELECT md5(%(position)s::text || ':' || s.subscription_id::text)::uuid, 'subscription',
        s.subscription_id, s.url
    FROM webhook_subscriptions s
    WHERE s.tenant_id = %(tenant_id)s AND s.status = 'active' AND %(event_type)s = ANY(s.events)
    UNION ALL
    SELECT md5(%(position)s::text || ':' || %(callback)s::text)::uuid, %(callback)s::text, NULL::uuid,
        %(callback_url)s::text
    WHERE %(callback_url)s::text IS NOT NULL
), queued AS (
    INSERT INTO webhook_deliveries (delivery_id, tenant_id, run_id, position, event_type, target,
        subscription_id, url, payload, created_at, next_attempt_at)
    SELECT delivery_id, %(tenant_id)s, %(run_id)s, %(position)s, %(event_type)s, target,
        subscription_id, url, %(payload)s, now(), now()
    FROM targets
    ON CONFLICT (delivery_id) DO NOTHING
    RETURNING 1
)
SELECT pg_notify('{WEBHOOKS_CHANNEL}', '') FROM queued LIMIT 1
"""
PUT_SUBSCRIPTION = """
INSERT INTO webhook_subscriptions (subscription_id, tenant_id, url, events, status, created_by,
    created_at, updated_at, created_position)
VALUES (%(id)s, %(tenant_id)s, %(url)s, %(events)s, 'active', %(by)s, %(at)s, %(at)s, %(position)s)
ON CONFLICT (subscription_id) DO NOTHING
"""
END_SUBSCRIPTION = """
WITH ended AS (
    UPDATE webhook_subscriptions SET status = %(status)s, status_reason = %(reason)s,
        updated_at = %(at)s
    WHERE subscription_id = %(id)s
)
UPDATE webhook_deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = now()
WHERE subscription_id = %(id)s AND status = 'pending'
"""
PUT_SECRET = """
INSERT INTO webhook_secrets (tenant_id, sealed_current, sealed_previous, previous_valid_until,
    rotated_at, last_position)
VALUES (%(tenant_id)s, %(current)s, %(previous)s, %(until)s, %(at)s, %(position)s)
ON CONFLICT (tenant_id) DO UPDATE SET sealed_current = EXCLUDED.sealed_current,
    sealed_previous = EXCLUDED.sealed_previous, previous_valid_until = EXCLUDED.previous_valid_until,
    rotated_at = EXCLUDED.rotated_at, last_position = EXCLUDED.last_position
"""
RUN_TOPICS = tuple(get_topic(c) for c in (
    Run.RunSubmitted, Run.RunStarted, Run.RunProgressed, Run.ArtifactAdded, Run.LineageEdgeRecorded,
    Run.RunCompleted, Run.RunFailed, Run.RunCancelled, Run.RunRetryScheduled,
))


class OutboxView(ReadModelView):
    """Writes of the outbox: run facts, messages, deliveries, subscriptions and secrets."""

    projection_name = "webhooks"

    def __init__(self) -> None:
        super().__init__()
        self._facts: dict[UUID, RunFacts | None] = {}

    def bind(self, cursor: Cursor[Any] | None) -> None:
        """As every view; the run facts this batch has seen or written go with the batch."""
        super().bind(cursor)
        self._facts = {}

    def run_event(self, tracking: Tracking, run_id: UUID, event: Any, base_url: str) -> None:
        """Fold one Run event into the run's facts; queue the message it makes, if any."""
        before = self._facts_before(tracking, run_id, event)
        position = tracking.notification_id
        facts, message = message_for(before, event, position, base_url)
        self._facts[run_id] = facts
        statements: list[Statement] = []
        if facts is not None and facts is not before:
            statements.append((PUT_FACTS, facts.params(run_id)))
        if message is not None and facts is not None:
            params = {
                "position": position, "tenant_id": facts.tenant_id, "run_id": run_id,
                "event_type": message.event_type, "at": message.at,
                "payload": Jsonb(message.envelope), "callback": message.callback,
                "callback_url": facts.callbacks.get(message.callback or ""),
            }
            statements += [(INSERT_EVENT, params), (FAN_OUT, params)]
        self.apply(tracking, statements)

    def _facts_before(self, tracking: Tracking, run_id: UUID, event: Any) -> RunFacts | None:
        """The run's facts as the batch has them so far. Read from the table once per run and
        batch (a read makes the batch's statements wait for their answers); a submission
        defines the facts, so it reads nothing."""
        if isinstance(event, Run.RunSubmitted):
            return None
        if run_id in self._facts:
            return self._facts[run_id]
        found: list[RunFacts] = []

        def read(curs: Cursor[Any]) -> None:
            row = curs.execute(GET_FACTS, (run_id,), prepare=True).fetchone()
            found.extend([RunFacts.from_row(row)] if row else [])

        self.transact(tracking, read)
        return found[0] if found else None

    def change(self, tracking: Tracking, sql: str, **params: Any) -> None:
        """One statement with the event's position."""
        self.apply(tracking, [(sql, {**params, "position": tracking.notification_id})])


# eventsourcing bounds a projection's view by TrackingRecorder; a ReadModelView is none (the
# pipeline records its position with the batch it writes in).
class OutboxProjection(Projection[OutboxView]):  # type: ignore[type-var]
    """Folds Run, Subscription and WebhookSecret events into the outbox tables."""

    name = "webhooks"
    topics = (*RUN_TOPICS, *(get_topic(c) for c in (
        Subscription.SubscriptionCreated, Subscription.SubscriptionDeleted,
        Subscription.SubscriptionDisabled, WebhookSecret.WebhookSecretRotated,
    )))
    base_url: ClassVar[str] = ""

    @classmethod
    def linking_to(cls, base_url: str) -> type[OutboxProjection]:
        """This projection with links (run, artifacts) made absolute under `base_url`."""
        return type(cls.__name__, (cls,), {"name": cls.name, "base_url": base_url.rstrip("/")})

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Run events go through the message rules; others only advance the position."""
        if isinstance(domain_event, Run.Event):
            self.view.run_event(tracking, domain_event.originator_id, domain_event, self.base_url)
        else:
            self.view.apply(tracking)

    @process_event.register
    def _(self, e: Subscription.SubscriptionCreated, tracking: Tracking) -> None:
        self.view.change(tracking, PUT_SUBSCRIPTION, id=e.originator_id, tenant_id=e.tenant_id,
                         url=e.url, events=list(e.events), by=e.created_by, at=e.created_at)

    @process_event.register
    def _(self, e: Subscription.SubscriptionDeleted, tracking: Tracking) -> None:
        self.view.change(tracking, END_SUBSCRIPTION, id=e.originator_id, status="deleted",
                         reason=f"deleted by {e.by}", at=e.at)

    @process_event.register
    def _(self, e: Subscription.SubscriptionDisabled, tracking: Tracking) -> None:
        self.view.change(tracking, END_SUBSCRIPTION, id=e.originator_id, status="disabled",
                         reason=e.reason, at=e.at)

    @process_event.register
    def _(self, e: WebhookSecret.WebhookSecretRotated, tracking: Tracking) -> None:
        self.view.change(tracking, PUT_SECRET, tenant_id=e.tenant_id, current=e.sealed_current,
                         previous=e.sealed_previous, until=e.previous_valid_until, at=e.at)
