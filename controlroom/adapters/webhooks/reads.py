"""The API's side of webhooks (asyncpg): delivery logs, subscriptions, secrets, inbound dedupe.

Redeliver and replay only touch delivery state (operational, not events): they put deliveries
back in the queue for the workers, who are woken by the same NOTIFY the outbox sends.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from controlroom.commands.ports import SecretBox
from controlroom.commands.webhooks.handlers import SECRET_KEY
from controlroom.projections.webhooks.outbox import WEBHOOKS_CHANNEL

DELIVERY_COLUMNS = """delivery_id, run_id, position, event_type, target, subscription_id, url,
    status, attempts, next_attempt_at, last_status_code, last_error, created_at, delivered_at"""
RUN_EXISTS = "SELECT 1 FROM run_status WHERE run_id = $1 AND tenant_id = $2"
RUN_TENANT = "SELECT tenant_id FROM run_status WHERE run_id = $1"
RUN_DELIVERIES = f"""SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
WHERE run_id = $1 AND tenant_id = $2 ORDER BY position, target"""
ATTEMPTS = """SELECT delivery_id, attempt, attempted_at, started_at, finished_at, url, status_code,
    latency_ms, error, next_attempt_at FROM webhook_attempts WHERE delivery_id = ANY($1::uuid[])
ORDER BY delivery_id, attempt"""
SUBSCRIPTION_COLUMNS = "subscription_id, url, events, status, status_reason, created_by, created_at"
SUBSCRIPTIONS = f"""SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions
WHERE tenant_id = $1 AND status <> 'deleted' ORDER BY created_at, subscription_id"""
SUBSCRIPTION = f"""SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions
WHERE tenant_id = $1 AND subscription_id = $2 AND status <> 'deleted'"""
REQUEUE = ("status = 'pending', next_attempt_at = now(), schedule_base = webhook_deliveries.attempts, "
           "updated_at = now()")
REDELIVER = f"""UPDATE webhook_deliveries SET {REQUEUE}
WHERE delivery_id = $1 AND tenant_id = $2 RETURNING {DELIVERY_COLUMNS}"""
REPLAY = f"""
WITH sub AS (
    SELECT subscription_id, url, events FROM webhook_subscriptions
    WHERE subscription_id = $2 AND tenant_id = $1 AND status = 'active'
), queued AS (
    INSERT INTO webhook_deliveries AS d (delivery_id, tenant_id, run_id, position, event_type,
        target, subscription_id, url, payload, created_at, next_attempt_at)
    SELECT md5(e.position::text || ':' || sub.subscription_id::text)::uuid, e.tenant_id, e.run_id,
        e.position, e.event_type, 'subscription', sub.subscription_id, sub.url, e.payload, now(), now()
    FROM webhook_events e, sub
    WHERE e.tenant_id = $1 AND e.position >= $3 AND e.event_type = ANY(sub.events)
    ON CONFLICT (delivery_id) DO UPDATE SET {REQUEUE.replace("webhook_deliveries.", "d.")}
    RETURNING 1
)
SELECT count(*) FROM queued
"""
SECRETS = """SELECT sealed_current, CASE WHEN previous_valid_until > now() THEN sealed_previous END
FROM webhook_secrets WHERE tenant_id = $1"""
CLAIM_INBOUND = """INSERT INTO webhook_inbound (tenant_id, webhook_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING RETURNING 1"""
SEEN_INBOUND = """SELECT status_code, response::text FROM webhook_inbound
WHERE tenant_id = $1 AND webhook_id = $2"""
FINISH_INBOUND = """UPDATE webhook_inbound SET status_code = $3, response = $4::jsonb
WHERE tenant_id = $1 AND webhook_id = $2"""
RELEASE_INBOUND = "DELETE FROM webhook_inbound WHERE tenant_id = $1 AND webhook_id = $2"
WAKE = f"SELECT pg_notify('{WEBHOOKS_CHANNEL}', '')"


class WebhookReads:
    """Tenant-scoped webhook queries; another tenant's rows are simply not there."""

    def __init__(self, pool: asyncpg.Pool, box: SecretBox) -> None:
        self.pool = pool
        self._box = box

    async def deliveries(self, tenant_id: str, run_id: UUID) -> tuple[list[Any], list[Any]] | None:
        """A run's deliveries and their attempts; None if the run isn't the tenant's."""
        async with self.pool.acquire() as conn:
            if await conn.fetchval(RUN_EXISTS, run_id, tenant_id) is None:
                return None
            rows = await conn.fetch(RUN_DELIVERIES, run_id, tenant_id)
            attempts = await conn.fetch(ATTEMPTS, [r["delivery_id"] for r in rows])
        return rows, attempts

    async def subscriptions(self, tenant_id: str) -> list[Any]:
        """The tenant's subscriptions (deleted ones left out), oldest first."""
        return await self.pool.fetch(SUBSCRIPTIONS, tenant_id)

    async def subscription(self, tenant_id: str, subscription_id: UUID) -> Any:
        """One subscription, or None."""
        return await self.pool.fetchrow(SUBSCRIPTION, tenant_id, subscription_id)

    async def redeliver(self, tenant_id: str, delivery_id: UUID) -> Any:
        """Queue a delivery again, now, with a fresh retry schedule; None if not the tenant's."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(REDELIVER, delivery_id, tenant_id)
            if row is not None:
                await conn.execute(WAKE)
        return row

    async def replay(self, tenant_id: str, subscription_id: UUID, from_position: int) -> int:
        """Queue every matching event from `from_position` on for the subscription again."""
        async with self.pool.acquire() as conn, conn.transaction():
            count: int = await conn.fetchval(REPLAY, tenant_id, subscription_id, from_position)
            if count:
                await conn.execute(WAKE)
        return count

    async def tenant_of_run(self, run_id: UUID) -> str | None:
        """Whose run this is (for finding the secret an inbound signature is checked with)."""
        tenant: str | None = await self.pool.fetchval(RUN_TENANT, run_id)
        return tenant

    async def verification_secrets(self, tenant_id: str) -> list[str]:
        """The tenant's valid secrets, plaintext: current, and the previous one during its grace."""
        row = await self.pool.fetchrow(SECRETS, tenant_id)
        return [self._box.unseal(s)[SECRET_KEY] for s in (row or ()) if s]

    async def claim_inbound(self, tenant_id: str, webhook_id: str) -> tuple[int | None, str | None] | None:
        """None if this webhook-id is new (and now claimed); else its (status, response) so far."""
        async with self.pool.acquire() as conn:
            if await conn.fetchval(CLAIM_INBOUND, tenant_id, webhook_id):
                return None
            row = await conn.fetchrow(SEEN_INBOUND, tenant_id, webhook_id)
        return (row[0], row[1]) if row else (None, None)

    async def finish_inbound(self, tenant_id: str, webhook_id: str, status: int, response: str) -> None:
        """Remember how a webhook-id was answered."""
        await self.pool.execute(FINISH_INBOUND, tenant_id, webhook_id, status, response)

    async def release_inbound(self, tenant_id: str, webhook_id: str) -> None:
        """Forget a webhook-id whose processing failed, so that a retry is applied."""
        await self.pool.execute(RELEASE_INBOUND, tenant_id, webhook_id)
