"""Routes that read no body refuse one that says something: a field sent to them would be
accepted and lost. No body, an empty one or `{}` is fine (clients often send those)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request

from controlroom.api.problems import invalid

_decode = msgspec.json.Decoder(dict[str, msgspec.Raw])


async def refuse_fields(request: Request[Any, Any, Any]) -> None:
    """422 naming the first field of a non-empty body (or the body itself if not an object)."""
    raw = (await request.body()).strip()
    if not raw:
        return
    try:
        fields = _decode.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise invalid("body", "this operation takes no body; send none (or {})") from None
    if fields:
        name = next(iter(fields))
        raise invalid(name, f"unknown field `{name}`: this operation takes no body")
