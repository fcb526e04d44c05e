"""Domain events of every kind the read models fold, built with the domain's own classes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from controlroom.domain.api_keys import ApiKey
from controlroom.domain.connections import Connection
from controlroom.domain.runs.run import Run
from controlroom.domain.webhooks.secret import WebhookSecret
from controlroom.domain.webhooks.subscription import Subscription

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def subscribed(tenant: str, *wants: str) -> Subscription:
    """A new subscription of `tenant` to `wants` (its creation still to collect)."""
    return Subscription.create(subscription_id=uuid.uuid4(), tenant_id=tenant,
                               url="http://127.0.0.1:9/hook", events=list(wants), by="alice",
                               now=NOW)


def rotated(tenant: str, sealed: str) -> WebhookSecret:
    """The tenant's secret, rotated to `sealed` (its events still to collect)."""
    secret = WebhookSecret.create(tenant)
    secret.rotate(sealed=sealed, grace_s=0, now=NOW)
    return secret


def submitted(tenant: str, **callbacks: str) -> Run:
    """A newly submitted run of `tenant` (its submission still to collect)."""
    return Run.submit(
        run_id=uuid.uuid4(), tenant_id=tenant, job_type="spark_etl", created_by="alice",
        code={}, spec={}, sealed_secrets=None, timeout_s=60, max_retries=0, labels={},
        callbacks=callbacks, idempotency_key=None, request_hash="h", job_name="nightly",
        submitted_at=NOW,
    )


def a_bit_of_everything(tenant: str) -> list[Any]:
    """One of each event the hosted read models fold, in a plausible order."""
    sub = subscribed(tenant, "run.submitted", "run.completed")
    events: list[Any] = [*sub.collect_events(), *rotated(tenant, "sealed-1").collect_events()]
    run = submitted(tenant, on_complete="http://127.0.0.1:9/done")
    run.start(attempt=1, worker_id="w1", now=NOW)
    run.progress(percent=50, message="half way", now=NOW)
    run.log(text="hello\n", stream="stdout", lines=1, now=NOW)
    run.add_artifact(artifact={"artifact_id": str(uuid.uuid4()), "path": "out.csv", "size": 3,
                               "sha256": "0" * 64, "content_type": "text/csv"}, now=NOW)
    run.record_lineage(source="raw.orders", target="mart.orders", now=NOW)
    run.complete(summary="ok", exit_code=0, now=NOW)
    events += run.collect_events()
    conn = Connection.create(tenant, "warehouse")
    conn.set(sealed_dsn="sealed-dsn", display_dsn="postgresql://u:***@db/w", by="alice", now=NOW)
    conn.delete(by="alice", now=NOW)
    key = ApiKey.issue(key_id=uuid.uuid4(), tenant_id=tenant, name="ci", scopes=None,
                       key="cr_" + uuid.uuid4().hex, by="alice", now=NOW)
    key.revoke(by="alice", now=NOW)
    sub.delete(by="alice", now=NOW)
    events += [*conn.collect_events(), *key.collect_events(), *sub.collect_events()]
    return events
