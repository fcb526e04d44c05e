"""What the OpenAPI document can't learn from a route's signature, by operation.

Routes read their bodies themselves (to decode once, with msgspec, into the exact struct and
answer in our problem shape), so Litestar sees no body type: the body each one decodes is
named here. So are the statuses a route answers beyond the rules in document.py. A test
checks that every operation named here exists and every JSON write route names its body.
"""

from __future__ import annotations

from typing import Any

from controlroom.api.api_keys.routes import ApiKeyBody
from controlroom.api.connections import ConnectionBody
from controlroom.api.lineage.openlineage import LineageEvent
from controlroom.api.schemas import EventBatch, JobSubmission
from controlroom.api.webhooks.schemas import ContinueReport, NewSubscription

JSON_BODIES: dict[str, Any] = {
    "POST /api/v1/jobs/run": JobSubmission,
    "POST /api/v1/runs/{run_id}/events": EventBatch,
    "PUT /api/v1/connections/{name}": ConnectionBody,
    "POST /api/v1/api-keys": ApiKeyBody,
    "POST /api/v1/webhooks/subscriptions": NewSubscription,
    "POST /api/v1/webhooks/continue": ContinueReport,
    "POST /api/v1/lineage": LineageEvent,
}
"""Operations whose JSON body must decode into this type (else 400/422)."""

ANY_JSON_BODY = {
    # Pre-flight answers any body with a report (200, `valid: false`): nothing is refused.
    "POST /api/v1/jobs/validate":
        "a job submission (as for POST /api/v1/jobs/run) to check; whatever is sent is reported on",
}
"""Operations that take any JSON body (or none) and say what is wrong with it in a 200."""

RAW_BODIES: dict[str, dict[str, Any]] = {
    "POST /api/v1/artifacts": {
        "application/octet-stream": {"type": "string", "format": "binary",
                                     "description": "the artifact's bytes (any media type)"},
        "multipart/form-data": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"},
                           "run_id": {"type": "string", "format": "uuid"},
                           "path": {"type": "string"}},
        },
    },
}
"""Operations whose body is not JSON, by media type."""

NO_BODY = frozenset({
    "POST /api/v1/runs/{run_id}/cancel", "POST /api/v1/webhooks/secret",
    "POST /api/v1/webhooks/subscriptions/{subscription_id}/replay",
    "POST /api/v1/webhooks/deliveries/{delivery_id}/redeliver",
})
"""Write operations that read no body."""

EXTRA_STATUSES: dict[str, dict[int, str]] = {
    "POST /api/v1/jobs/run": {409: "Idempotency-Key reused with another body",
                              422: "the job failed pre-flight validation"},
    "POST /api/v1/runs/{run_id}/events": {409: "the run has ended"},
    "POST /api/v1/runs/{run_id}/cancel": {409: "the run has ended"},
    "POST /api/v1/webhooks/continue": {404: "no such run", 409: "the run can't take this outcome"},
    "POST /api/v1/artifacts": {404: "no such run", 409: "the run has ended"},
    "POST /api/v1/webhooks/subscriptions/{subscription_id}/replay": {409: "subscription not active"},
    "POST /api/v1/webhooks/deliveries/{delivery_id}/redeliver": {409: "delivery not redeliverable"},
    "GET /api/v1/lineage/graph": {404: "no lineage has been recorded for the entity"},
    "GET /api/v1/artifacts/{artifact_id}/content": {416: "the range can't be satisfied"},
}
"""Problem statuses an operation answers beyond the rules (document.problem_statuses)."""

OWN_BODY_STATUSES: dict[str, dict[int, str]] = {
    "PUT /api/v1/connections/{name}": {201: "created (200: replaced)"},
    "GET /api/v1/artifacts/{artifact_id}/content": {206: "the range asked for",
                                                   304: "not modified (If-None-Match)"},
    "GET /readyz": {503: "not ready: the failing checks are named"},
}
"""Statuses beyond the route's own answered with its own kind of body (304: none)."""

BINARY_ANSWERS = frozenset({"GET /api/v1/artifacts/{artifact_id}/content"})
"""Operations answering bytes of whatever media type was stored, not JSON."""

EVENT_STREAMS = frozenset({"GET /api/v1/runs/{run_id}/events", "GET /api/v1/events"})
"""Operations answering `Accept: text/event-stream` with SSE instead of a JSON page."""
