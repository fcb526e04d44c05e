"""Run events on the wire: the JSON shape, SSE messages (encoded once, shared) and pages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec
from litestar import Request
from litestar.response.sse import ServerSentEventMessage

from controlroom.api.problems import invalid
from controlroom.api.views import artifact_url
from controlroom.projections.events import RunEventRow

Ids = Literal["run", "feed"]
"""Which id an SSE message carries: the version in its run, or the position in the log."""
MAX_ID = 2**63 - 1
_encode = msgspec.json.encode
_decode_obj = msgspec.json.Decoder(dict[str, Any])


class RunEventView(msgspec.Struct):
    """One run event: SSE `data`, a JSON page item, a `controlroom runs watch --json` line."""

    run_id: str
    version: int
    """Its id on the run's stream (1 = submitted)."""
    position: int
    """Its id on the tenant feed (the event log's position)."""
    event: str
    """status | progress | log | artifact | lineage."""
    type: str
    """submitted, started, progress, log, artifact, lineage, completed, failed, cancel_requested,
    cancelled or retry_scheduled."""
    job_type: str
    at: datetime
    data: msgspec.Raw


class RunEventPage(msgspec.Struct):
    """GET /api/v1/runs/{run_id}/events without `Accept: text/event-stream`."""

    run_id: str
    events: list[RunEventView]
    last_event_id: int
    """Pass back as `after` for the next page."""
    more: bool
    ended: bool
    """The run has ended and this page holds its last event (or came after it)."""


class FeedPage(msgspec.Struct):
    """GET /api/v1/events without `Accept: text/event-stream`."""

    events: list[RunEventView]
    last_event_id: int
    more: bool


def view(row: RunEventRow) -> RunEventView:
    """The public shape of a read-model row (a stored artifact gains the URL of its bytes)."""
    data = msgspec.Raw(row.data)
    if row.event == "artifact":
        fields = _decode_obj.decode(row.data)
        if not fields.get("external"):  # an external artifact's url is where it is kept
            data = msgspec.Raw(_encode({**fields, "url": artifact_url(fields.get("artifact_id"))}))
    return RunEventView(run_id=str(row.run_id), version=row.version, position=row.position,
                        event=row.event, type=row.type, job_type=row.job_type, at=row.at, data=data)


def message(row: RunEventRow, ids: Ids) -> bytes:
    """The SSE message of `row`, encoded once however many subscribers it goes to."""
    encoded = row.encoded.get(ids)
    if encoded is None:
        event_id = row.version if ids == "run" else row.position
        encoded = ServerSentEventMessage(data=_encode(view(row)).decode(), event=row.event,
                                         id=event_id).encode()
        row.encoded[ids] = encoded
    return encoded


@dataclass
class Batch(ServerSentEventMessage):
    """Several already-encoded messages written at once (one socket write per wake-up)."""

    payload: bytes = b""

    def encode(self) -> bytes:
        """The messages as they are."""
        return self.payload


def batch(rows: Iterable[RunEventRow], ids: Ids) -> Batch:
    """The rows' messages in one write."""
    return Batch(payload=b"".join(message(r, ids) for r in rows))


HEARTBEAT = ServerSentEventMessage(comment="keepalive", data=None)


def end(row: RunEventRow) -> ServerSentEventMessage:
    """The last message of a run's stream, after its terminal event (no id: resuming repeats it)."""
    status = _decode_obj.decode(row.data).get("status")
    return ServerSentEventMessage(event="end", data=_encode(
        {"event": "end", "run_id": str(row.run_id), "status": status, "version": row.version}
    ).decode())


RECONNECT_MS = 1000
"""The `retry:` a stream's last message asks an EventSource to wait before reconnecting."""


def resume(last_event_id: int, buffered: int) -> ServerSentEventMessage:
    """The last message to a client that fell too far behind: reconnect from here."""
    return _reconnect(last_event_id, f"the client fell more than {buffered} events behind; "
                      "reconnect with Last-Event-ID to continue from where it was")


def stopping(last_event_id: int) -> ServerSentEventMessage:
    """The last message of every stream when the server stops: reconnect (to another one)."""
    return _reconnect(last_event_id, "the server is stopping; reconnect with Last-Event-ID to "
                      "continue from where the stream was")


def _reconnect(last_event_id: int, reason: str) -> ServerSentEventMessage:
    return ServerSentEventMessage(event="resume", retry=RECONNECT_MS, data=_encode({
        "event": "resume", "last_event_id": str(last_event_id), "reason": reason,
    }).decode())


def wants_stream(request: Request[Any, Any, Any]) -> bool:
    """Whether the client asked for SSE (`Accept: text/event-stream`)."""
    return "text/event-stream" in request.headers.get("accept", "")


def resume_point(request: Request[Any, Any, Any], after: int | None) -> int | None:
    """Where to start: `Last-Event-ID` (what an EventSource sends back) beats `?after=`."""
    header = request.headers.get("last-event-id")
    if header is None or not header.strip():
        return after
    value = header.strip()
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_ID:
        raise invalid("Last-Event-ID", "must be an event id this API sent (a non-negative integer)")
    return int(value)
