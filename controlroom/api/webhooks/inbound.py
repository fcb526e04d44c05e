"""Inbound `POST /api/v1/webhooks/continue`: an external runner (Continue CLI, n8n) reports on a run.

Authenticated by a bearer token, or — for senders that only sign — a Standard Webhooks
signature made with the run's tenant's secret. A `webhook-id` makes redeliveries harmless:
the first answer is remembered and repeated, the outcome is recorded once.
"""

from __future__ import annotations

from functools import partial
from typing import Any
from uuid import UUID

import msgspec
from litestar import Request, Response, post
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from controlroom.api.artifacts.reported import external_artifacts
from controlroom.api.auth import Principal, authenticate
from controlroom.api.deps import Deps
from controlroom.api.problems import ProblemError, from_decode_error, invalid
from controlroom.api.views import API
from controlroom.api.webhooks.deps import WebhookDeps
from controlroom.api.webhooks.routes import webhooks_of
from controlroom.api.webhooks.schemas import ContinueAccepted, ContinueReport
from controlroom.commands.errors import RunNotFoundError
from controlroom.commands.webhooks.inbound import ExternalArtifact, Outcome
from controlroom.domain.errors import DomainError

SCOPE = "runs:write"
MAX_WEBHOOK_ID = 255
_decode = msgspec.json.Decoder(ContinueReport)
_encode = msgspec.json.Encoder()
_decode_paths = msgspec.json.Decoder(list[dict[str, Any]])


def _report(raw: bytes) -> tuple[UUID, ContinueReport]:
    if not raw:
        raise ProblemError(400, "Malformed JSON", "request body is empty; expected a JSON object")
    try:
        report = _decode.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise from_decode_error(e) from None
    try:
        return UUID(report.run_id), report
    except ValueError:
        raise invalid("run_id", "must be a UUID") from None


async def _bearer(request: Request[Any, Any, Any], header: str, run_id: UUID) -> Principal:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("Authorization header must be 'Bearer <token>'")
    principal = await authenticate(request.app, token.strip())
    if SCOPE not in principal.scopes and "admin" not in principal.scopes:
        raise PermissionDeniedException(f"token lacks scope {SCOPE!r}")
    if principal.run_id is not None and principal.run_id != run_id:
        raise RunNotFoundError(run_id)  # a run token knows no other run
    return principal


async def _signed_tenant(hooks: WebhookDeps, request: Request[Any, Any, Any], raw: bytes,
                         run_id: UUID) -> str:
    """The tenant whose secret signed this body; 401 otherwise (an unknown run included)."""
    tenant = await hooks.reads.tenant_of_run(run_id)
    secrets = await hooks.reads.verification_secrets(tenant) if tenant else []
    headers = dict(request.headers)
    for secret in secrets:
        try:
            Webhook(secret).verify(raw, headers, json_parse=False)
            return str(tenant)
        except (WebhookVerificationError, ValueError):  # malformed headers raise ValueError
            continue
    raise NotAuthorizedException(
        "send a bearer token, or sign with the tenant's webhook secret (Standard Webhooks): "
        "the webhook-id, webhook-timestamp and webhook-signature headers did not verify")


@post(f"{API}/webhooks/continue", opt={"exclude_from_auth": True}, status_code=200)
async def continue_run(request: Request[Any, Any, Any]) -> Response[ContinueAccepted]:
    """Record an external runner's outcome for a run: running, completed, failed or cancelled."""
    deps: Deps = request.app.state.deps
    hooks = webhooks_of(request)
    raw = await request.body()
    header = request.headers.get("authorization")
    run_id, report = _report(raw)
    if header:
        principal = await _bearer(request, header, run_id)
        tenant, by = principal.tenant_id, principal.sub
    else:
        tenant, by = await _signed_tenant(hooks, request, raw, run_id), "webhook"
    artifacts = await _artifacts(deps, tenant, run_id, report)  # refused before it's claimed
    webhook_id = (request.headers.get("webhook-id") or "")[:MAX_WEBHOOK_ID]
    if webhook_id and (seen := await hooks.reads.claim_inbound(tenant, webhook_id)) is not None:
        return _repeat(*seen)
    outcome = Outcome(status=report.status, summary=report.summary, attempt=report.attempt,
                      reason=report.reason, exit_code=report.exit_code,
                      artifacts=artifacts)
    try:
        position = await deps.write(partial(hooks.outcomes.report, by=by), tenant, run_id, outcome)
        await deps.settle(position)
        row = await deps.reads.get(tenant, run_id)
        answer = ContinueAccepted(str(run_id), row["status"] if row else report.status)
    except (DomainError, RunNotFoundError) as e:
        if webhook_id:  # decided by the run's state: a redelivery gets the same answer
            await hooks.reads.finish_inbound(tenant, webhook_id, _status_of(e), _encode.encode(
                {"detail": str(e)}).decode())
        raise
    except Exception:  # transient (database away, busy run): a retry must be applied
        if webhook_id:
            await hooks.reads.release_inbound(tenant, webhook_id)
        raise
    if webhook_id:
        await hooks.reads.finish_inbound(tenant, webhook_id, 200, _encode.encode(answer).decode())
    return Response(answer)


async def _artifacts(deps: Deps, tenant: str, run_id: UUID, report: ContinueReport
                     ) -> list[ExternalArtifact]:
    """The report's artifacts to record; a path it names must be one the run has."""
    known: list[str] = []
    if any(isinstance(a, str) and "://" not in a for a in report.artifacts):
        row = await deps.reads.get(tenant, run_id)
        if row is None:
            raise RunNotFoundError(run_id)
        known = [a["path"] for a in _decode_paths.decode(row["artifacts"])]
    return external_artifacts(report.artifacts, known)


def _status_of(e: Exception) -> int:
    return 404 if isinstance(e, RunNotFoundError) else 409


def _repeat(status: int | None, response: str | None) -> Response[ContinueAccepted]:
    """The answer a webhook-id got the first time."""
    if status is None or response is None:
        raise ProblemError(409, "Already in progress",
                           "a report with this webhook-id is being recorded; retry shortly",
                           headers={"Retry-After": "1"})
    if status != 200:
        detail = msgspec.json.decode(response).get("detail", "")
        raise ProblemError(status, "Duplicate webhook", f"already answered: {detail}")
    first = msgspec.json.decode(response, type=ContinueAccepted)
    return Response(ContinueAccepted(first.run_id, first.status, duplicate=True),
                    headers={"Idempotent-Replayed": "true"})
