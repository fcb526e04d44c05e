"""Run leases in Postgres (`run_leases`, see controlroom/migrations/) and the reaper's sweep queries.

Every expiry is computed and compared with the database's clock, never a worker's.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg_pool import ConnectionPool

TAKE = """
INSERT INTO run_leases (run_id, attempt, worker_id, expires_at)
VALUES (%(run_id)s, %(attempt)s, %(worker_id)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (run_id) DO UPDATE
    SET attempt = EXCLUDED.attempt, worker_id = EXCLUDED.worker_id, expires_at = EXCLUDED.expires_at
    WHERE run_leases.attempt < EXCLUDED.attempt
"""
RENEW = """
UPDATE run_leases SET expires_at = now() + make_interval(secs => %(ttl)s)
WHERE run_id = %(run_id)s AND attempt = %(attempt)s AND worker_id = %(worker_id)s
"""
RELEASE = """
DELETE FROM run_leases
WHERE run_id = %(run_id)s AND attempt = %(attempt)s AND worker_id = %(worker_id)s
"""
CLAIM_EXPIRED = """
DELETE FROM run_leases WHERE run_id IN (
    SELECT run_id FROM run_leases WHERE expires_at < now() - make_interval(secs => %(grace)s)
    ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
) AND expires_at < now() - make_interval(secs => %(grace)s)
RETURNING run_id, attempt
"""
RUNNING_WITHOUT_LEASE = """
SELECT s.run_id FROM run_status s
WHERE s.status = 'running' AND s.updated_at < now() - make_interval(secs => %(age)s)
  AND s.started_at < now() - make_interval(secs => %(age)s)
  AND NOT EXISTS (SELECT 1 FROM run_leases l WHERE l.run_id = s.run_id AND l.attempt = s.attempt)
ORDER BY s.updated_at LIMIT %(limit)s
"""
QUEUED_AND_DUE = """
SELECT run_id, attempt FROM run_status
WHERE status = 'queued' AND updated_at < now() - make_interval(secs => %(age)s)
  AND coalesce(next_attempt_at, updated_at) < now() - make_interval(secs => %(age)s)
ORDER BY updated_at LIMIT %(limit)s
"""


class PostgresLeases:
    """LeaseStore and RunSweep on the process's operations pool (database.operations_pool).

    Renewals are one short UPDATE every few seconds per running job; the pool replaces a
    connection the database dropped, so leases recover by themselves after a restart.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def take(self, run_id: UUID, attempt: int, worker_id: str, ttl_s: float) -> bool:
        """Take the lease for `attempt` (over any older attempt's); False if another holds it."""
        return self._count(TAKE, run_id=run_id, attempt=attempt, worker_id=worker_id, ttl=ttl_s) == 1

    def renew(self, run_id: UUID, attempt: int, worker_id: str, ttl_s: float) -> bool:
        """Extend our lease; False once it is gone or someone else's."""
        return self._count(RENEW, run_id=run_id, attempt=attempt, worker_id=worker_id, ttl=ttl_s) == 1

    def release(self, run_id: UUID, attempt: int, worker_id: str) -> None:
        """Drop our lease."""
        self._count(RELEASE, run_id=run_id, attempt=attempt, worker_id=worker_id)

    def claim_expired(self, limit: int, grace_s: float = 0.0) -> list[tuple[UUID, int]]:
        """Delete leases expired over `grace_s` ago, returning what they covered."""
        return [(r[0], r[1]) for r in self._rows(CLAIM_EXPIRED, limit=limit, grace=grace_s)]

    def running_without_lease(self, started_before_s: float, limit: int) -> list[UUID]:
        """Running runs, untouched and started over `started_before_s` ago, without a lease."""
        return [r[0] for r in self._rows(RUNNING_WITHOUT_LEASE, age=started_before_s, limit=limit)]

    def queued_and_due(self, due_for_s: float, limit: int) -> list[tuple[UUID, int]]:
        """Queued runs due (and untouched) for over `due_for_s`, oldest first."""
        return [(r[0], r[1]) for r in self._rows(QUEUED_AND_DUE, age=due_for_s, limit=limit)]

    def _count(self, sql: str, **params: Any) -> int:
        with self._pool.connection() as conn:
            return conn.execute(sql, params).rowcount

    def _rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            return conn.execute(sql, params).fetchall()
