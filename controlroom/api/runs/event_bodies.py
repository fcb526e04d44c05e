"""`POST /runs/{id}/events` bodies: one event or a list, each flat or in the PRD's envelope.

Flat:     {"event_type": "progress", "percent": 40, "message": "loading rows"}
Envelope: {"event_type": "progress", "timestamp": "…", "data": {"percent": 40, "message": "…"}}

Both decode into the same commands. Every field is understood or refused by name (422):
nothing a client sends is accepted and then dropped.
"""

from __future__ import annotations

import msgspec

from controlroom.api.gate.json_body import too_deep
from controlroom.api.problems import ProblemError, from_decode_error, invalid
from controlroom.commands.messages import (
    EVENT_TYPES,
    Artifact,
    ArtifactFields,
    Lineage,
    LineageFields,
    Log,
    LogFields,
    Progress,
    ProgressFields,
    ReportedAt,
    RunEvent,
)
from controlroom.domain.artifacts.external import path_problem, sha256_problem, url_problem


class _Envelope(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    timestamp: ReportedAt = None
    """When it happened by the client's clock (the server's own time is kept too)."""


class ProgressEnvelope(_Envelope, tag_field="event_type", tag="progress"):
    """A progress report in the PRD's envelope."""

    data: ProgressFields


class LogEnvelope(_Envelope, tag_field="event_type", tag="log"):
    """Log output in the PRD's envelope."""

    data: LogFields


class ArtifactEnvelope(_Envelope, tag_field="event_type", tag="artifact"):
    """An external artifact in the PRD's envelope."""

    data: ArtifactFields


class LineageEnvelope(_Envelope, tag_field="event_type", tag="lineage"):
    """A lineage edge in the PRD's envelope."""

    data: LineageFields


EventEnvelope = ProgressEnvelope | LogEnvelope | ArtifactEnvelope | LineageEnvelope
_COMMANDS: dict[type[_Envelope], type[RunEvent]] = {
    ProgressEnvelope: Progress, LogEnvelope: Log, ArtifactEnvelope: Artifact,
    LineageEnvelope: Lineage,
}

_decode_list = msgspec.json.Decoder(list[msgspec.Raw])
_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
"""Just enough of an event to tell its form (an envelope has `data`), values left undecoded."""
_decode_flat = msgspec.json.Decoder(RunEvent)
_decode_envelope = msgspec.json.Decoder(EventEnvelope)
ALLOWED = f"must be one of {', '.join(EVENT_TYPES)}"


def decode_events(body: bytes) -> tuple[list[RunEvent], bool]:
    """The body's events in order, and whether they came as a list (for naming fields)."""
    if not body:
        raise ProblemError(400, "Malformed JSON", "request body is empty; expected an event")
    listed = body.lstrip()[:1] == b"["
    try:
        items = _decode_list.decode(body) if listed else [msgspec.Raw(body)]
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise from_decode_error(e) from None
    except RecursionError:
        raise too_deep() from None
    if listed and not items:
        raise invalid("body", "send at least one event")
    return [_event(item, f"[{i}]" if listed else "") for i, item in enumerate(items)], listed


def _event(raw: msgspec.Raw, at: str) -> RunEvent:
    enveloped = False
    try:
        enveloped = "data" in _decode_fields.decode(raw)
        if not enveloped:
            event: RunEvent = _decode_flat.decode(raw)
        else:
            envelope = _decode_envelope.decode(raw)
            fields = msgspec.structs.asdict(envelope.data)
            if envelope.timestamp is not None:
                fields["timestamp"] = envelope.timestamp
            event = _COMMANDS[type(envelope)](**fields)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise _located(from_decode_error(e), at) from None
    except RecursionError:
        raise too_deep() from None
    if isinstance(event, Artifact):
        _check_artifact(event, (f"{at}.data" if at else "data") if enveloped else at)
    return event


def _check_artifact(a: Artifact, at: str) -> None:
    """What the types can't say about an external artifact's path, URL and digest."""
    prefix = f"{at}." if at else ""
    for field, problem in (("path", path_problem(a.path)), ("url", url_problem(a.url)),
                           ("sha256", a.sha256 and sha256_problem(a.sha256))):
        if problem:
            raise invalid(f"{prefix}{field}", problem)


def _located(problem: ProblemError, at: str) -> ProblemError:
    """The problem with its field named from the body's root, and `event_type` explained."""
    if at and problem.status == 400:  # an item of a parsed list: well-formed, but no object
        return invalid(at, "an event must be a JSON object")
    if problem.status != 422 or not problem.errors:
        return problem
    field = problem.errors[0]["field"]
    message = problem.errors[0]["message"]
    if field == "body":
        field = at or "body"
    elif at:
        field = f"{at}.{field}" if not field.startswith("[") else f"{at}{field}"
    if field.rsplit(".", 1)[-1] == "event_type":
        message = f"{ALLOWED} ({message})"
    return invalid(field, message)
