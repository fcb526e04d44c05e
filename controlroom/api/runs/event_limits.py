"""The limits of one `POST /runs/{id}/events`, checked before anything is written."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from controlroom.api.problems import ProblemError, invalid
from controlroom.commands.append_limits import MAX_EVENT_BYTES, MAX_EVENTS_PER_REQUEST
from controlroom.commands.messages import RunEvent

_encode = msgspec.json.Encoder()


def event_bytes(event: RunEvent) -> int:
    """An event's size as compact JSON: what MAX_EVENT_BYTES bounds."""
    return len(_encode.encode(event))


def check_event_limits(events: Sequence[RunEvent], *, listed: bool) -> None:
    """422 for too many events, 413 naming the first event over the byte limit."""
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise invalid("body", f"at most {MAX_EVENTS_PER_REQUEST} events per request, "
                              f"got {len(events)}; send the rest in another request")
    for i, event in enumerate(events):
        if (size := event_bytes(event)) > MAX_EVENT_BYTES:
            field = f"[{i}]" if listed else "body"
            raise ProblemError(
                413, "Payload too large",
                f"{field}: an event may be at most {MAX_EVENT_BYTES} bytes as JSON, "
                f"this one is {size}; split its text over several events",
                errors=[{"field": field, "message": f"{size} bytes > {MAX_EVENT_BYTES}"}])
