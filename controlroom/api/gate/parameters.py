"""The one check of every route's query and path parameters before Litestar parses them.

PostgreSQL text can't hold a NUL character and its bigint stops at 2**63 - 1: a parameter
outside either would reach the database and fail there (a 500). Refused here instead, as a
400 naming the parameter — the status Litestar gives any other out-of-range parameter.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from litestar import Request
from litestar.constants import RESERVED_KWARGS
from litestar.enums import ParamType
from litestar.handlers import HTTPRouteHandler
from litestar.params import ParameterKwarg

from controlroom.api.problems import ProblemError

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
"""Integer parameters are stored and compared as PostgreSQL bigint."""
_LOCATED = (ParamType.QUERY, ParamType.PATH)


def bad_parameter(name: str, message: str) -> ProblemError:
    """A 400 naming one query or path parameter."""
    return ProblemError(400, "Bad request", f"{name}: {message}",
                        errors=[{"field": name, "message": message}])


@cache
def int_parameters(handler: HTTPRouteHandler) -> dict[str, tuple[int, int]]:
    """A handler's integer query and path parameters (by the name sent): their (min, max).

    The bounds the route declares, else bigint's.
    """
    found = {}
    for name, field in handler.parsed_fn_signature.parameters.items():
        kwarg = field.kwarg_definition
        if name in RESERVED_KWARGS or (kwarg is not None and not isinstance(kwarg, ParameterKwarg)):
            continue  # the request itself, a body or a dependency
        if isinstance(kwarg, ParameterKwarg) and kwarg.param_type not in _LOCATED:
            continue  # a header or cookie
        is_int = field.is_subclass_of(int) or field.has_inner_subclass_of(int)
        if not is_int or field.is_subclass_of(bool) or field.has_inner_subclass_of(bool):
            continue
        low, high = INT_MIN, INT_MAX
        if isinstance(kwarg, ParameterKwarg):
            name = kwarg.name or kwarg.query or name
            if kwarg.ge is not None or kwarg.gt is not None:
                low = int(kwarg.ge) if kwarg.ge is not None else int(kwarg.gt or 0) + 1
            if kwarg.le is not None or kwarg.lt is not None:
                high = int(kwarg.le) if kwarg.le is not None else int(kwarg.lt or 0) - 1
        found[name] = (low, high)
    return found


def beyond_bigint(value: str) -> str | None:
    """What is wrong with an integer literal PostgreSQL's bigint can't hold; None if it can.

    Anything that is not an integer literal is left to Litestar's own parsing.
    """
    text = value.strip()
    digits = text.lstrip("+-")
    if len(text) - len(digits) > 1 or not (digits.isascii() and digits.isdigit()):
        return None
    negative = text.startswith("-")
    # int() refuses very long digit strings; past 19 significant digits it is out of range anyway
    significant = digits.lstrip("0") or "0"
    number = int(significant) if len(significant) <= 19 else INT_MAX + 1
    if negative and number > -INT_MIN:
        return f"must be at least {INT_MIN} (a 64-bit integer)"
    if not negative and number > INT_MAX:
        return f"must be at most {INT_MAX} (a 64-bit integer)"
    return None


def check(request: Request[Any, Any, Any]) -> None:
    """Refuse a NUL in any query or path parameter, and an integer parameter beyond bigint."""
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise bad_parameter(name.replace("\x00", "\\u0000"),
                                "must not contain NUL (\\u0000) characters")
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise bad_parameter(name, "must not contain NUL (\\u0000) characters")
    handler = request.route_handler
    if not isinstance(handler, HTTPRouteHandler):
        return
    for name in int_parameters(handler):
        for value in request.query_params.getall(name, []):
            if (message := beyond_bigint(value)) is not None:
                raise bad_parameter(name, message)
