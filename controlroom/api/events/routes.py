"""Live run events: one run's stream and the tenant-wide feed (SSE, or a JSON page)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Request, Response, get
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response.sse import ServerSentEvent

from controlroom.api.auth import Principal, requires
from controlroom.api.events.ports import EventStreams
from controlroom.api.events.streams import feed_stream, run_stream
from controlroom.api.events.views import (
    FeedPage,
    RunEventPage,
    resume_point,
    view,
    wants_stream,
)
from controlroom.api.problems import invalid
from controlroom.api.views import API
from controlroom.commands.errors import RunNotFoundError
from controlroom.projections.events import EVENT_TYPES

MAX_PAGE = 1000
After = Annotated[int | None, QueryParameter(ge=0, description="resume after this event id")]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="JSON page size")]
SSE_DOC = ("With `Accept: text/event-stream`: SSE, replaying after `Last-Event-ID` (or `after`) and "
           "then live, with a `: keepalive` comment when idle; otherwise a JSON page.")


def _streams(request: Request[Principal, str, Any]) -> EventStreams:
    streams: EventStreams | None = request.app.state.deps.events
    if streams is None:
        raise RuntimeError("no EventStreams were given to Deps")
    return streams


def _event_types(value: str | None) -> list[str] | None:
    """`event_type=status,log` (comma separated) → the SSE event names to keep."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = sorted(set(names) - set(EVENT_TYPES))
    if unknown or not names:
        raise invalid("event_type", f"must be among {', '.join(EVENT_TYPES)} (comma separated)")
    return names


@get(f"{API}/runs/{{run_id:uuid}}/events", guards=[requires("runs:read")], description=SSE_DOC)
async def run_events(
    request: Request[Principal, str, Any], run_id: FromPath[UUID], after: After = None,
    limit: Limit = 100,
) -> Response[RunEventPage]:
    """A run's events in order; ids are versions in the run. The stream ends with `end`."""
    streams = _streams(request)
    tenant = request.user.tenant_id
    if not await streams.reads.run_exists(tenant, run_id):
        raise RunNotFoundError(run_id)
    start = resume_point(request, after) or 0
    if wants_stream(request):
        # The annotation is the JSON page, which the OpenAPI document shows; the stream is
        # documented beside it (api/openapi/document.py).
        return ServerSentEvent(run_stream(streams, tenant, run_id, start))  # type: ignore[return-value]
    rows = await streams.reads.run_page(tenant, run_id, after=start, limit=limit + 1)
    page = rows[:limit]
    ended = any(r.terminal for r in page)
    if not page:
        ending = await streams.reads.ending(tenant, run_id)
        ended = ending is not None and ending.version <= start
    return Response(RunEventPage(
        run_id=str(run_id), events=[view(r) for r in page],
        last_event_id=page[-1].version if page else start, more=len(rows) > limit, ended=ended,
    ))


@get(f"{API}/events", guards=[requires("runs:read")], description=SSE_DOC)
async def tenant_events(
    request: Request[Principal, str, Any], after: After = None, limit: Limit = 100,
    run_id: FromQuery[UUID | None] = None, job_type: FromQuery[str | None] = None,
    event_type: Annotated[str | None, QueryParameter(
        description="comma separated: status, progress, log, artifact, lineage")] = None,
) -> Response[FeedPage]:
    """The caller's tenant's events across runs; ids are log positions. Without an id, the
    stream starts from now and the JSON page from the beginning."""
    streams = _streams(request)
    tenant = request.user.tenant_id
    events = _event_types(event_type)
    start = resume_point(request, after)
    if wants_stream(request):
        # As in run_events: the annotation is the JSON page the OpenAPI document shows.
        return ServerSentEvent(feed_stream(streams, tenant, start, run_id=run_id,  # type: ignore[return-value]
                                           job_type=job_type, events=events))
    rows = await streams.reads.feed_page(tenant, after=start or 0, limit=limit + 1, run_id=run_id,
                                         job_type=job_type, events=events)
    page = rows[:limit]
    return Response(FeedPage(events=[view(r) for r in page],
                             last_event_id=page[-1].position if page else start or 0,
                             more=len(rows) > limit))
