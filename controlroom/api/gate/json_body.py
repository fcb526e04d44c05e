"""The one gate every JSON request body passes before a route decodes it: type and depth.

Run from the application's `before_request` hook (hook.py), so no route can forget
it. Routes whose body is not JSON (artifact uploads) say so with `opt={"body": "raw"}`.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

from litestar import Request

from controlroom.api.problems import ProblemError

MAX_DEPTH = 64
"""JSON nesting allowed in a request; far below where decoding or storing it would recurse too deep."""
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
RAW_BODY = "raw"
"""`opt={"body": RAW_BODY}` on a route: its body is not JSON and is not checked here."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = tuple(1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256))


def too_deep() -> ProblemError:
    """A 400 for JSON nested beyond what the decoder (and the event store) can take."""
    return ProblemError(400, "Malformed JSON",
                        f"request body is nested too deeply (at most {MAX_DEPTH} levels)")


def nested_deeper_than(raw: bytes, limit: int) -> bool:
    """True if arrays and objects in a JSON text nest deeper than `limit` (strings don't count)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:  # the common case, at C speed
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    # accumulate/map/max all run in C: a few ns a bracket, no Python loop, no recursion
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def check_depth(raw: bytes) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH (400), before any decoder recurses into it."""
    if nested_deeper_than(raw, MAX_DEPTH):
        raise too_deep()


def is_json(content_type: str) -> bool:
    """`application/json` or any `application/…+json`, with no charset or UTF-8 (RFC 8259)."""
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        return False
    charset = next((v for k, _, v in (p.strip().partition("=") for p in params.split(";"))
                    if k.strip().lower() == "charset"), "utf-8")
    return charset.strip().strip('"').lower() in {"utf-8", "utf8"}


def _unsupported(content_type: str | None) -> ProblemError:
    got = f"got {content_type[:100]!r}" if content_type else "none was sent"
    message = (f"must be application/json (or an application/*+json type, UTF-8); {got} "
               "(with curl: -H 'Content-Type: application/json' or --json)")
    return ProblemError(415, "Unsupported media type", f"Content-Type: {message}",
                        errors=[{"field": "Content-Type", "message": message}])


def _is_json_route(request: Request[Any, Any, Any]) -> bool:
    return request.method in BODY_METHODS and request.route_handler.opt.get("body") != RAW_BODY


async def guard(request: Request[Any, Any, Any]) -> None:
    """before_request: check a JSON route's body once, before its handler sees it."""
    if not _is_json_route(request):
        return
    content_type = request.headers.get("content-type")
    empty = request.headers.get("content-length") == "0"  # cancel, rerun: no body, any type
    if content_type is not None and not empty and not is_json(content_type):
        raise _unsupported(content_type)  # refused unread
    raw = await request.body()  # cached on the request: the handler reads the same bytes
    if raw and (content_type is None or not is_json(content_type)):
        raise _unsupported(content_type)
    if request.headers.get("content-encoding", "identity").lower() == "identity":
        check_depth(raw)  # a compressed body is checked by its route once inflated
