"""Delivery state in PostgreSQL for webhook deliverers (psycopg): claims, attempts, wake-ups."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from psycopg_pool import ConnectionPool

from controlroom.commands.ports import SecretBox
from controlroom.commands.webhooks.deliveries import ENDPOINT_PATTERN, Attempted, DueDelivery, delivery_body
from controlroom.commands.webhooks.handlers import SECRET_KEY

CLAIM_SCAN = 4
"""Due deliveries looked at per slot asked for: room to skip past a full endpoint's backlog."""
CLAIM = """
WITH candidates AS (
    SELECT delivery_id, next_attempt_at,
        coalesce(lower(substring(url from %(pattern)s)), '') AS endpoint
    FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
        AND coalesce(lower(substring(url from %(pattern)s)), '') <> ALL(%(full)s::text[])
    ORDER BY next_attempt_at LIMIT %(scan)s
    FOR UPDATE SKIP LOCKED
), due AS (
    SELECT c.delivery_id FROM (
        SELECT *, row_number() OVER (PARTITION BY endpoint ORDER BY next_attempt_at) AS nth
        FROM candidates) c
    LEFT JOIN unnest(%(busy)s::text[], %(used)s::int[]) AS b(endpoint, used) USING (endpoint)
    WHERE c.nth + coalesce(b.used, 0) <= %(per_endpoint)s
    ORDER BY c.next_attempt_at LIMIT %(limit)s
), claimed AS (
    UPDATE webhook_deliveries d
    SET next_attempt_at = now() + make_interval(secs => %(lease)s), updated_at = now()
    FROM due WHERE d.delivery_id = due.delivery_id
    RETURNING d.delivery_id, d.tenant_id, d.url, d.payload, d.attempts, d.schedule_base,
        d.subscription_id
)
SELECT c.*, s.sealed_current,
    CASE WHEN s.previous_valid_until > now() THEN s.sealed_previous END
FROM claimed c LEFT JOIN webhook_secrets s USING (tenant_id)
"""
RECORD = """
WITH attempt AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, started_at, finished_at,
        url, status_code, latency_ms, error, next_attempt_at)
    VALUES (%(id)s, %(attempt)s, coalesce(%(started)s::timestamptz, now()), %(started)s, %(finished)s,
        %(url)s, %(code)s, %(latency)s, %(error)s, now() + make_interval(secs => %(retry_in)s))
    ON CONFLICT DO NOTHING
)
UPDATE webhook_deliveries SET
    attempts = GREATEST(attempts, %(attempt)s), status = %(status)s,
    next_attempt_at = now() + make_interval(secs => %(retry_in)s),
    last_status_code = %(code)s, last_error = %(error)s, updated_at = now(),
    delivered_at = CASE WHEN %(status)s = 'delivered' THEN now() ELSE delivered_at END
WHERE delivery_id = %(id)s AND status = 'pending'
"""


class PostgresDeliveryStore:
    """The DeliveryStore port on the process's operations pool; woken by the outbox's NOTIFY.

    Claims and records are short statements; sends (many threads) never hold a connection.
    `wake` is set on every notification on WEBHOOKS_CHANNEL (the process's session listens).
    """

    def __init__(self, pool: ConnectionPool, box: SecretBox, wake: threading.Event) -> None:
        self._pool = pool
        self._box = box
        self._wake = wake

    def claim_due(self, limit: int, lease_s: float, *, busy: dict[str, int],
                  per_endpoint: int) -> list[DueDelivery]:
        """Take up to `limit` due deliveries for `lease_s` seconds, oldest first, leaving those
        whose endpoint would then have more than `per_endpoint` in flight (`busy`: in flight now)."""
        full = [e for e, used in busy.items() if used >= per_endpoint]
        with self._pool.connection() as conn:
            rows = conn.execute(CLAIM, {
                "limit": limit, "lease": lease_s, "scan": limit * CLAIM_SCAN, "full": full,
                "busy": list(busy), "used": list(busy.values()), "per_endpoint": per_endpoint,
                "pattern": ENDPOINT_PATTERN,
            }).fetchall()
        return [self._due(row) for row in rows]

    def _due(self, row: tuple[Any, ...]) -> DueDelivery:
        delivery_id, tenant_id, url, payload, attempts, base, subscription_id, *sealed = row
        secrets = [self._box.unseal(s)[SECRET_KEY] for s in sealed if s]
        return DueDelivery(delivery_id, tenant_id, url, delivery_body(payload), attempts, base,
                           subscription_id, secrets)

    def record(self, delivery_id: UUID, attempt: int, url: str, result: Attempted, status: str,
               retry_in_s: float | None) -> None:
        """Log the attempt and move the delivery on (pending again, delivered, failed or gone)."""
        with self._pool.connection() as conn:
            conn.execute(RECORD, {
                "id": delivery_id, "attempt": attempt, "url": url, "code": result.status_code,
                "latency": result.latency_ms, "error": result.error, "status": status,
                "started": result.started_at, "finished": result.finished_at,
                "retry_in": retry_in_s,
            })

    def wait_for_work(self, timeout_s: float) -> None:
        """Sleep until deliveries are queued (NOTIFY) or `timeout_s` passes."""
        if self._wake.wait(timeout_s):
            self._wake.clear()  # the claim that follows sees what woke it
