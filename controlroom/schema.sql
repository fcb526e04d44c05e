-- Read models of Control Room, applied at start-up (idempotent).
-- The event store and tracking tables are created by the eventsourcing library.

CREATE TABLE IF NOT EXISTS run_status (
    run_id            uuid PRIMARY KEY,
    tenant_id         text        NOT NULL,
    job_type          text        NOT NULL,
    job_name          text        NOT NULL,
    created_by        text        NOT NULL,
    status            text        NOT NULL,
    attempt           integer     NOT NULL DEFAULT 1,
    max_retries       integer     NOT NULL,
    timeout_s         integer     NOT NULL,
    labels            jsonb       NOT NULL DEFAULT '{}',
    spec              jsonb       NOT NULL DEFAULT '{}',
    secret_names      text[]      NOT NULL DEFAULT '{}',
    idempotency_key   text,
    created_at        timestamptz NOT NULL,
    started_at        timestamptz,
    completed_at      timestamptz,
    updated_at        timestamptz NOT NULL,
    progress_percent  double precision,
    progress_message  text,
    progress_at       timestamptz,
    cancel_requested  boolean     NOT NULL DEFAULT false,
    exit_code         integer,
    summary           text,
    error_reason      text,
    error_message     text,
    next_attempt_at   timestamptz,
    log_lines         bigint      NOT NULL DEFAULT 0,
    event_count       integer     NOT NULL DEFAULT 1,
    last_position     bigint      NOT NULL
);

-- Listing newest first per tenant, optionally narrowed by status / job type / creator.
CREATE INDEX IF NOT EXISTS run_status_tenant_created
    ON run_status (tenant_id, created_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS run_status_tenant_status_created
    ON run_status (tenant_id, status, created_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS run_status_tenant_job_type_created
    ON run_status (tenant_id, job_type, created_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS run_status_tenant_creator_created
    ON run_status (tenant_id, created_by, created_at DESC, run_id DESC);

CREATE TABLE IF NOT EXISTS run_log_chunks (
    run_id      uuid        NOT NULL,
    position    bigint      NOT NULL,
    tenant_id   text        NOT NULL,
    attempt     integer     NOT NULL,
    stream      text        NOT NULL,
    text        text        NOT NULL,
    lines       integer     NOT NULL,
    logged_at   timestamptz NOT NULL,
    PRIMARY KEY (run_id, position)
);

-- Artifacts' metadata (from ArtifactAdded); the bytes live in the artifact store by sha256.
CREATE TABLE IF NOT EXISTS artifacts (
    artifact_id   uuid PRIMARY KEY,
    tenant_id     text        NOT NULL,
    run_id        uuid        NOT NULL,
    attempt       integer     NOT NULL,
    path          text        NOT NULL,
    size          bigint      NOT NULL,
    sha256        text        NOT NULL,
    content_type  text        NOT NULL,
    created_at    timestamptz NOT NULL,
    position      bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_run ON artifacts (run_id, position, path);
-- The run's artifacts again, as shown in its status: GET /runs/{id} stays a one-row read.
ALTER TABLE run_status ADD COLUMN IF NOT EXISTS artifacts jsonb NOT NULL DEFAULT '[]';

-- Leases on running attempts: operational state, deliberately not events — a heartbeat
-- every few seconds per running attempt would flood the log with noise nobody replays.
-- A worker takes the lease when it starts an attempt and renews it; the reaper fails runs
-- whose lease expired (times are the database's clock, so machines' clocks don't matter).
CREATE TABLE IF NOT EXISTS run_leases (
    run_id      uuid PRIMARY KEY,
    attempt     integer     NOT NULL,
    worker_id   text        NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS run_leases_expires ON run_leases (expires_at);

-- The reaper's sweeps look only at active runs: a small partial index, whatever the history.
CREATE INDEX IF NOT EXISTS run_status_active_updated
    ON run_status (status, updated_at) WHERE status IN ('queued', 'running');

-- Tenant connections (projection `connections`): the DSN only ever sealed, a masked display form.
CREATE TABLE IF NOT EXISTS connections (
    tenant_id     text        NOT NULL,
    name          text        NOT NULL,
    sealed_dsn    text        NOT NULL,
    display_dsn   text        NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    updated_by    text        NOT NULL,
    last_position bigint      NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
