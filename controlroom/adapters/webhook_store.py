"""Delivery state in PostgreSQL for delivery workers (psycopg): claims, attempts, wake-ups."""

from __future__ import annotations

import contextlib
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from controlroom.commands.deliveries import ENDPOINT_PATTERN, Attempted, DueDelivery, delivery_body
from controlroom.commands.ports import SecretBox
from controlroom.commands.webhooks import SECRET_KEY
from controlroom.projections.outbox import WEBHOOKS_CHANNEL

CONNECT_TIMEOUT_S = 5
POOL_MAX = 4
"""Claims and records are short statements; sends (many threads) never hold a connection."""
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
    """The DeliveryStore port: one connection for claims and records, one for LISTEN."""

    def __init__(self, dsn: str, box: SecretBox) -> None:
        self._dsn = dsn
        self._box = box
        self._pool = ConnectionPool(dsn, min_size=1, max_size=POOL_MAX, open=True, kwargs={
            "autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S})
        self._listener: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

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
        try:
            if self._listener is None or self._listener.closed:
                self._listener = self._connect()
                self._listener.execute(f"LISTEN {WEBHOOKS_CHANNEL}")
            for _ in self._listener.notifies(timeout=timeout_s, stop_after=1):
                pass
        except psycopg.OperationalError:
            self.close()  # reconnect next time; the host restarts the worker on the raise
            raise

    def close(self) -> None:
        """Close the listener (the pool stays: the worker may be restarted by its host)."""
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._listener.close()
            self._listener = None

    def shutdown(self) -> None:
        """Close every connection."""
        self.close()
        self._pool.close()

