-- Migration 0001: the read models and operational tables, as the last schema.sql made them
-- (a database made by it is recognised and recorded as having this migration).
-- The event store's tables are created by the eventsourcing library.

CREATE TABLE run_status (
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
    last_position     bigint      NOT NULL,
    -- What a submission says beyond the above: `created_by` holds the client it named (else the
    -- token's subject, as it always did), `submitted_by` the token's subject (NULL in rows
    -- projected before it existed: there `created_by` is the subject), where the code came
    -- from, and its callbacks.
    submitted_by      text,
    repo              jsonb,
    callbacks         jsonb       NOT NULL DEFAULT '{}',
    -- The run's artifacts again, as shown in its status: GET /runs/{id} stays a one-row read.
    artifacts         jsonb       NOT NULL DEFAULT '[]'
);

-- Listing newest first per tenant, optionally narrowed by status / job type / creator.
CREATE INDEX run_status_tenant_created
    ON run_status (tenant_id, created_at DESC, run_id DESC);
CREATE INDEX run_status_tenant_status_created
    ON run_status (tenant_id, status, created_at DESC, run_id DESC);
CREATE INDEX run_status_tenant_job_type_created
    ON run_status (tenant_id, job_type, created_at DESC, run_id DESC);
CREATE INDEX run_status_tenant_creator_created
    ON run_status (tenant_id, created_by, created_at DESC, run_id DESC);
CREATE INDEX run_status_tenant_submitter_created
    ON run_status (tenant_id, submitted_by, created_at DESC, run_id DESC);

CREATE TABLE run_log_chunks (
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
-- External artifacts (registered by reference, bytes kept elsewhere) have a `url`; their
-- size and sha256 only if the reporter said.
CREATE TABLE artifacts (
    artifact_id   uuid PRIMARY KEY,
    tenant_id     text        NOT NULL,
    run_id        uuid        NOT NULL,
    attempt       integer     NOT NULL,
    path          text        NOT NULL,
    size          bigint,
    sha256        text,
    content_type  text        NOT NULL,
    created_at    timestamptz NOT NULL,
    position      bigint      NOT NULL,
    url           text
);
CREATE INDEX artifacts_run ON artifacts (run_id, position, path);
-- GET /api/v1/artifacts: a tenant's artifacts newest first (the log position is the order).
CREATE INDEX artifacts_tenant_position ON artifacts (tenant_id, position DESC);

-- Leases on running attempts: operational state, deliberately not events — a heartbeat
-- every few seconds per running attempt would flood the log with noise nobody replays.
-- A worker takes the lease when it starts an attempt and renews it; the reaper fails runs
-- whose lease expired (times are the database's clock, so machines' clocks don't matter).
CREATE TABLE run_leases (
    run_id      uuid PRIMARY KEY,
    attempt     integer     NOT NULL,
    worker_id   text        NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX run_leases_expires ON run_leases (expires_at);

-- The reaper's sweeps look only at active runs: a small partial index, whatever the history.
CREATE INDEX run_status_active_updated
    ON run_status (status, updated_at) WHERE status IN ('queued', 'running');

-- Live events (projection `run_events`): each Run event as the SSE streams send it. `version` is
-- its id on the run's stream, `position` (the log's) its id on the tenant feed; `terminal` marks
-- the event that ends the run. API processes tail it with `WHERE position > $1`.
CREATE TABLE run_events (
    position   bigint PRIMARY KEY,
    tenant_id  text        NOT NULL,
    run_id     uuid        NOT NULL,
    version    integer     NOT NULL,
    job_type   text        NOT NULL,
    event      text        NOT NULL,
    type       text        NOT NULL,
    data       jsonb       NOT NULL,
    terminal   boolean     NOT NULL DEFAULT false,
    at         timestamptz NOT NULL,
    UNIQUE (run_id, version)
);
CREATE INDEX run_events_tenant_position ON run_events (tenant_id, position);

-- Tenant connections (projection `connections`): the DSN only ever sealed, a masked display form.
CREATE TABLE connections (
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

-- API keys (projection `api_keys`): only the key's SHA-256 and last four characters.
CREATE TABLE api_keys (
    id            uuid        PRIMARY KEY,
    tenant_id     text        NOT NULL,
    name          text        NOT NULL,
    key_hash      text        NOT NULL UNIQUE,
    last4         text        NOT NULL,
    scopes        text[]      NOT NULL,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    revoked_by    text,
    last_position bigint      NOT NULL
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);

-- Lineage (projection `lineage`). The job behind each run, for edges recorded on runs:
CREATE TABLE lineage_runs (
    run_id     uuid PRIMARY KEY,
    tenant_id  text NOT NULL,
    job_id     uuid NOT NULL,
    job_name   text NOT NULL
);
-- One row per (tenant, source, target, job): its first and last run, when, and how often.
-- `position` (the last event that touched the row) lets API processes catch their in-memory
-- graph up with `WHERE position > $1`; graph walks never run in SQL.
CREATE TABLE lineage_edges (
    tenant_id         text        NOT NULL,
    source            text        NOT NULL,
    target            text        NOT NULL,
    job_id            uuid        NOT NULL,
    job_namespace     text        NOT NULL,
    job_name          text        NOT NULL,
    source_namespace  text,
    target_namespace  text,
    first_run_id      text        NOT NULL,
    last_run_id       text        NOT NULL,
    first_seen        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,
    seen_count        bigint      NOT NULL DEFAULT 1,
    first_position    bigint      NOT NULL,
    position          bigint      NOT NULL,
    PRIMARY KEY (tenant_id, source, target, job_id)
);
CREATE INDEX lineage_edges_position ON lineage_edges (position);

-- Webhooks (projection `webhooks`, controlroom/projections/outbox.py). The log says *what* must be
-- delivered: the projection writes each message and its deliveries with its tracking position.
-- Delivery *state* (attempts, next retry, results) is operational, written by delivery workers.
CREATE TABLE webhook_runs (
    run_id      uuid PRIMARY KEY,
    tenant_id   text        NOT NULL,
    job_type    text        NOT NULL,
    job_name    text        NOT NULL,
    callbacks   jsonb       NOT NULL DEFAULT '{}',
    attempt     integer     NOT NULL DEFAULT 1,
    started_at  timestamptz,
    artifacts   jsonb       NOT NULL DEFAULT '[]'
);
-- Every subscribable event once, per tenant: what a subscription replays from a position.
CREATE TABLE webhook_events (
    position     bigint PRIMARY KEY,
    tenant_id    text        NOT NULL,
    run_id       uuid,
    event_type   text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    payload      jsonb       NOT NULL
);
CREATE INDEX webhook_events_tenant ON webhook_events (tenant_id, position);
CREATE TABLE webhook_subscriptions (
    subscription_id  uuid PRIMARY KEY,
    tenant_id        text        NOT NULL,
    url              text        NOT NULL,
    events           text[]      NOT NULL,
    status           text        NOT NULL,
    status_reason    text,
    created_by       text        NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    created_position bigint      NOT NULL
);
CREATE INDEX webhook_subscriptions_tenant ON webhook_subscriptions (tenant_id, created_at);
-- Signing secrets, only ever sealed (AES-GCM, CONTROLROOM_SECRET_KEY).
CREATE TABLE webhook_secrets (
    tenant_id             text PRIMARY KEY,
    sealed_current        text        NOT NULL,
    sealed_previous       text,
    previous_valid_until  timestamptz,
    rotated_at            timestamptz NOT NULL,
    last_position         bigint      NOT NULL
);
-- One row per (event, target); delivery_id (and so webhook-id) derives from both.
CREATE TABLE webhook_deliveries (
    delivery_id      uuid PRIMARY KEY,
    tenant_id        text        NOT NULL,
    run_id           uuid,
    position         bigint      NOT NULL,
    event_type       text        NOT NULL,
    target           text        NOT NULL,
    subscription_id  uuid,
    url              text        NOT NULL,
    payload          jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending',
    attempts         integer     NOT NULL DEFAULT 0,
    schedule_base    integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX webhook_deliveries_due
    ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_run ON webhook_deliveries (run_id, position);
CREATE INDEX webhook_deliveries_subscription
    ON webhook_deliveries (subscription_id) WHERE status = 'pending';
CREATE TABLE webhook_attempts (
    delivery_id      uuid        NOT NULL,
    attempt          integer     NOT NULL,
    attempted_at     timestamptz NOT NULL,
    url              text        NOT NULL,
    status_code      integer,
    latency_ms       double precision NOT NULL,
    error            text,
    next_attempt_at  timestamptz,
    -- When the attempt began and ended (attempted_at: when it began, kept for older readers).
    started_at       timestamptz,
    finished_at      timestamptz,
    PRIMARY KEY (delivery_id, attempt)
);
-- Inbound hooks seen, by webhook-id: a redelivered one is answered, not applied twice.
CREATE TABLE webhook_inbound (
    tenant_id    text        NOT NULL,
    webhook_id   text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    status_code  integer,
    response     jsonb,
    PRIMARY KEY (tenant_id, webhook_id)
);

-- Rebuild requests (controlroom/projections/rebuild.py): `controlroom projections rebuild` asks,
-- the process hosting the projection empties its tables and replays the log, and this row
-- reports how far it got.
CREATE TABLE projection_rebuilds (
    projection      text PRIMARY KEY,
    state           text        NOT NULL CHECK (state IN ('requested', 'rebuilding', 'done', 'failed')),
    requested_by    text        NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    target_position bigint,
    finished_at     timestamptz,
    error           text
);

-- Where each read model has got to in the log: one row ('controlroom', position) per table,
-- written in the same transaction as the read model's rows (controlroom/projections/pipeline.py).
CREATE TABLE run_status_tracking (application_name text PRIMARY KEY, notification_id bigint);
CREATE TABLE connections_tracking (application_name text PRIMARY KEY, notification_id bigint);
CREATE TABLE run_events_tracking (application_name text PRIMARY KEY, notification_id bigint);
CREATE TABLE lineage_tracking (application_name text PRIMARY KEY, notification_id bigint);
CREATE TABLE api_keys_tracking (application_name text PRIMARY KEY, notification_id bigint);
CREATE TABLE webhooks_tracking (application_name text PRIMARY KEY, notification_id bigint);
CREATE TABLE dispatch_tracking (application_name text PRIMARY KEY, notification_id bigint);
