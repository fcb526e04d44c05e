"""Read-side queries over the run_status and artifacts read models (asyncpg)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

Rows = list[asyncpg.Record]
"""Named here because inside RunReads `list` is its listing method."""

RUN_COLUMNS = """run_id, job_type, job_name, created_by, status, attempt, max_retries, timeout_s,
    labels::text AS labels, spec::text AS spec, created_at, started_at, completed_at, updated_at,
    progress_percent, progress_message, progress_at, cancel_requested, exit_code, summary,
    error_reason, error_message, next_attempt_at, log_lines, artifacts::text AS artifacts,
    COALESCE(submitted_by, created_by) AS submitted_by, repo::text AS repo,
    callbacks::text AS callbacks"""

GET_RUN = f"SELECT {RUN_COLUMNS} FROM run_status WHERE run_id = $1 AND tenant_id = $2"

LIST_RUNS = f"""
SELECT {RUN_COLUMNS} FROM run_status
WHERE tenant_id = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR job_type = $3)
  AND ($4::text IS NULL OR created_by = $4 OR submitted_by = $4)
  AND ($5::timestamptz IS NULL OR (created_at, run_id) < ($5, $6::uuid))
ORDER BY created_at DESC, run_id DESC
LIMIT $7
"""

GET_LOG = """
SELECT c.stream, c.text FROM run_log_chunks c
WHERE c.run_id = $1 AND c.tenant_id = $2
ORDER BY c.position
"""

ARTIFACT_COLUMNS = "artifact_id, run_id, attempt, path, size, sha256, content_type, created_at, url"
GET_ARTIFACT = f"""
SELECT {ARTIFACT_COLUMNS} FROM artifacts
WHERE artifact_id = $1 AND tenant_id = $2
"""
LIST_ARTIFACTS = f"""
SELECT {ARTIFACT_COLUMNS}, position FROM artifacts
WHERE tenant_id = $1
  AND ($2::uuid IS NULL OR run_id = $2)
  AND ($3::text IS NULL OR starts_with(path, $3))
  AND ($4::bigint IS NULL OR position < $4)
ORDER BY position DESC
LIMIT $5
"""
"""Newest first: the log position an artifact was recorded at orders them (and is the cursor)."""

RUN_EXISTS = "SELECT 1 FROM run_status WHERE run_id = $1 AND tenant_id = $2"


class RunReads:
    """Tenant-scoped queries; another tenant's run is simply not there."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, tenant_id: str, run_id: UUID) -> asyncpg.Record | None:
        """One run's status row."""
        return await self.pool.fetchrow(GET_RUN, run_id, tenant_id)

    async def list(
        self,
        tenant_id: str,
        *,
        status: str | None,
        job_type: str | None,
        created_by: str | None,
        before: tuple[datetime, UUID] | None,
        limit: int,
    ) -> Rows:
        """Runs newest first, after an optional (created_at, run_id) cursor."""
        at, rid = before if before else (None, None)
        return await self.pool.fetch(
            LIST_RUNS, tenant_id, status, job_type, created_by, at, rid, limit
        )

    async def log(self, tenant_id: str, run_id: UUID) -> Rows | None:
        """The run's log chunks in order, or None if the run isn't the tenant's."""
        async with self.pool.acquire() as conn:
            if await conn.fetchval(RUN_EXISTS, run_id, tenant_id) is None:
                return None
            return await conn.fetch(GET_LOG, run_id, tenant_id)

    async def artifact(self, tenant_id: str, artifact_id: UUID) -> asyncpg.Record | None:
        """One artifact's metadata, or None if it isn't the tenant's."""
        return await self.pool.fetchrow(GET_ARTIFACT, artifact_id, tenant_id)

    async def artifacts(
        self, tenant_id: str, *, run_id: UUID | None, path_prefix: str | None,
        before: int | None, limit: int,
    ) -> Rows:
        """The tenant's artifacts newest first, recorded before log position `before`."""
        return await self.pool.fetch(LIST_ARTIFACTS, tenant_id, run_id, path_prefix, before, limit)

    async def ping(self) -> None:
        """Raises if the database can't answer."""
        await self.pool.fetchval("SELECT 1")
