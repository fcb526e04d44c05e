"""Submitting jobs and reading, reporting on and cancelling runs."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter

from controlroom.api.auth import Principal, requires
from controlroom.api.deps import Deps
from controlroom.api.gate.no_body import refuse_fields
from controlroom.api.runs.event_bodies import decode_events
from controlroom.api.runs.event_limits import check_event_limits
from controlroom.api.runs.submission import check_storable, command
from controlroom.api.runs.validate import ensure_valid
from controlroom.api.schemas import Accepted, RunPage, RunView
from controlroom.api.views import (
    API,
    accepted_view,
    decode_cursor,
    encode_cursor,
    logged_view,
    run_view,
)
from controlroom.api.webhooks.routes import check_callbacks
from controlroom.commands.append_limits import MAX_EVENTS_BODY_BYTES
from controlroom.commands.errors import RunNotFoundError
from controlroom.commands.runs.handlers import idempotent_run_id

StatusFilter = Literal["queued", "running", "completed", "failed", "cancelled"]
MAX_PAGE = 200


NOT_VISIBLE_RETRY_S = "1"
"""Retry-After on an answer whose run reads don't show yet: the read model is catching up."""


async def _current(deps: Deps, tenant: str, run_id: UUID) -> RunView:
    """The run from the read model; else from the log (`visible: false`), so that a run that
    was accepted is never a 404 while the read model catches up (projector down or behind)."""
    row = await deps.reads.get(tenant, run_id)
    if row is not None:
        return run_view(row)
    run = await deps.run_from_log(tenant, run_id)
    if run is None:
        raise RunNotFoundError(run_id)
    return logged_view(run)


def _visibility_headers(view: RunView) -> dict[str, str]:
    """`Run-Visible: false` and a Retry-After while reads don't show the run yet."""
    return {} if view.visible else {"Run-Visible": "false", "Retry-After": NOT_VISIBLE_RETRY_S}


@post(f"{API}/jobs/run", guards=[requires("jobs:write")], status_code=202)
async def submit_job(request: Request[Principal, str, Any]) -> Response[RunView]:
    """Submit a job; it is queued and a worker picks it up. Safe to retry with Idempotency-Key."""
    deps: Deps = request.app.state.deps
    cmd = command(await request.body(), request.user, request.headers.get("idempotency-key"))
    replay = cmd.idempotency_key is not None and await deps.reads.get(
        cmd.tenant_id, idempotent_run_id(cmd.tenant_id, cmd.idempotency_key)
    ) is not None
    if not replay:  # a retry of an accepted submission is answered even if the world changed
        await check_callbacks(request, cmd.callbacks)
        await ensure_valid(deps, cmd)
    result = await deps.write(deps.commands.submit, cmd)
    visible = await deps.settle(result.position)
    if result.created:
        # Durable either way: when reads lag, the answer says so rather than promising them.
        view = accepted_view(result.run_id, cmd, result.submitted_at, visible=visible)
    else:
        view = await _current(deps, cmd.tenant_id, result.run_id)
    headers = {"Location": f"{API}/runs/{result.run_id}", **_visibility_headers(view)}
    if not result.created:
        headers["Idempotent-Replayed"] = "true"
    return Response(view, status_code=202, headers=headers)


@get(f"{API}/runs/{{run_id:uuid}}", guards=[requires("runs:read")])
async def get_run(request: Request[Principal, str, Any], run_id: FromPath[UUID]) -> Response[RunView]:
    """A run's status, timestamps, progress, artifacts and where its log is (from its log, with
    `visible: false`, while the read model hasn't caught up with it)."""
    view = await _current(request.app.state.deps, request.user.tenant_id, run_id)
    return Response(view, headers=_visibility_headers(view))


@get(f"{API}/runs", guards=[requires("runs:read")])
async def list_runs(
    request: Request[Principal, str, Any],
    status: FromQuery[StatusFilter | None] = None,
    job_type: FromQuery[str | None] = None,
    created_by: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
) -> RunPage:
    """The caller's runs, newest first; pass `next_cursor` back as `cursor` for more."""
    deps: Deps = request.app.state.deps
    rows = await deps.reads.list(
        request.user.tenant_id, status=status, job_type=job_type, created_by=created_by,
        before=decode_cursor(cursor) if cursor else None, limit=limit + 1,
    )
    page = rows[:limit]
    more = len(rows) > limit
    last = page[-1] if page else None
    return RunPage(
        runs=[run_view(r) for r in page],
        next_cursor=encode_cursor(last["created_at"], last["run_id"]) if more and last else None,
    )


@post(f"{API}/runs/{{run_id:uuid}}/events", guards=[requires("runs:write", run_token=True)],
      status_code=202, request_max_body_size=MAX_EVENTS_BODY_BYTES)
async def post_events(request: Request[Principal, str, Any], run_id: FromPath[UUID]) -> Accepted:
    """Report progress, log output, external artifacts or lineage: one event or a list, each
    flat or as `{event_type, timestamp, data}` (docs/api.md "Reporting events").

    Limits (docs/limits.md) are checked before anything is written; a body over the limit is
    refused (413) from its Content-Length, before it is read. The 202 comes once the events are
    in the log, without waiting for read models to show them: `last_event_id` says when the
    run's event stream has them.
    """
    deps: Deps = request.app.state.deps
    events, listed = decode_events(await request.body())
    check_storable(msgspec.to_builtins(events if listed else events[0]))
    check_event_limits(events, listed=listed)
    tenant = request.user.tenant_id
    # A job's own token is never recorded, even if the job echoes it back.
    redact = [request.auth] if request.user.run_id is not None else []
    # Reporters (workers, CI) write far more than they read back: no read-your-writes wait.
    recorded = await deps.write(
        partial(deps.commands.record, attempt=request.user.attempt, redact=redact),
        tenant, run_id, events,
    )
    return Accepted(run_id=str(run_id), status=recorded.status, accepted=len(events),
                    last_event_id=recorded.version)


@post(f"{API}/runs/{{run_id:uuid}}/cancel", guards=[requires("runs:write")], status_code=202)
async def cancel_run(request: Request[Principal, str, Any], run_id: FromPath[UUID]) -> RunView:
    """Ask for a run to stop: a queued run is cancelled at once, a running one within seconds."""
    await refuse_fields(request)
    deps: Deps = request.app.state.deps
    tenant = request.user.tenant_id
    position = await deps.write(deps.commands.request_cancel, tenant, run_id, request.user.sub)
    await deps.settle(position)
    return await _current(deps, tenant, run_id)


@get(f"{API}/runs/{{run_id:uuid}}/logs", guards=[requires("runs:read")], media_type="text/plain")
async def get_logs(
    request: Request[Principal, str, Any], run_id: FromPath[UUID],
    stream: FromQuery[Literal["stdout", "stderr", "system"] | None] = None,
) -> str:
    """The run's log as plain text, in the order it was produced."""
    deps: Deps = request.app.state.deps
    chunks = await deps.reads.log(request.user.tenant_id, run_id)
    if chunks is None:
        raise RunNotFoundError(run_id)
    texts = [c["text"] for c in chunks if stream is None or c["stream"] == stream]
    return "\n".join(texts) + ("\n" if texts else "")
