"""The one place where errors become RFC 9457 application/problem+json responses."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    ValidationException,
)

from controlroom.commands.errors import (
    ApiKeyNotFoundError,
    ConcurrencyError,
    ConnectionNotFoundError,
    IdempotencyConflictError,
    RunNotFoundError,
)
from controlroom.commands.webhooks.handlers import SubscriptionNotFoundError
from controlroom.domain.api_keys import InvalidApiKeyError
from controlroom.domain.connections import InvalidConnectionError
from controlroom.domain.errors import DomainError
from controlroom.domain.webhooks.subscription import InvalidSubscriptionError

log = logging.getLogger("controlroom.api")

PROBLEM_JSON = "application/problem+json"
_AT_PATH = re.compile(
    r"^(?P<message>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?$", re.S
)
_ROOT_TYPE = re.compile(r"^Expected `(?P<expected>[^`]*)`, got `[^`]*`$")


FieldError = dict[str, Any]
"""One of a problem's `errors`: its `field` and `message`, and what a check adds to them
(`check`, `path`, `line` and `column`, which may be null, `severity`)."""


class ProblemError(Exception):
    """An error the API reports as a problem document."""

    def __init__(
        self, status: int, title: str, detail: str, *, errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


def invalid(field: str, message: str) -> ProblemError:
    """A 422 naming one field."""
    return ProblemError(
        422, "Validation failed", f"{field}: {message}", errors=[{"field": field, "message": message}]
    )


def from_decode_error(e: msgspec.DecodeError | UnicodeDecodeError) -> ProblemError:
    """Malformed JSON or a body of the wrong JSON type → 400; well-formed but wrong → 422."""
    if not isinstance(e, msgspec.ValidationError):
        return ProblemError(400, "Malformed JSON", f"request body is not valid JSON: {e}")
    m = _AT_PATH.match(str(e))
    message = m["message"] if m else str(e)
    path = (m["path"] or "") if m else ""
    if not path and (root := _ROOT_TYPE.match(message)):
        return ProblemError(400, "Malformed JSON", "request body must be a JSON "
                            + root["expected"].replace(" | ", " or "))
    if m and m["key"]:
        message = f"{message} (in a key)"
    named = re.match(r"Object (?:missing required|contains unknown) field `([^`]+)`", message)
    if named:
        path = f"{path}.{named[1]}"
    field = path.lstrip(".") or "body"
    return invalid(field, message)


def _problem(request: Request[Any, Any, Any], status: int, title: str, detail: str,
             errors: list[FieldError] | None = None,
             headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": "about:blank", "title": title, "status": status, "detail": detail,
        "instance": request.url.path,
    }
    if errors:
        body["errors"] = errors
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Map any exception to a problem response."""
    match exc:
        case ProblemError():
            return _problem(request, exc.status, exc.title, exc.detail, exc.errors, exc.headers)
        case RunNotFoundError():
            return _problem(request, 404, "Run not found", str(exc))
        case IdempotencyConflictError():
            return _problem(request, 409, "Idempotency-Key reused", str(exc))
        case ConnectionNotFoundError():
            return _problem(request, 404, "Connection not found", str(exc))
        case InvalidConnectionError():
            return _problem(request, 422, "Validation failed", str(exc),
                            [{"field": exc.field, "message": exc.message}])
        case ApiKeyNotFoundError():
            return _problem(request, 404, "API key not found", str(exc))
        case InvalidApiKeyError():
            return _problem(request, 422, "Validation failed", str(exc),
                            [{"field": exc.field, "message": exc.message}])
        case InvalidSubscriptionError():
            return _problem(request, 422, "Validation failed", str(exc),
                            [{"field": exc.field, "message": exc.message}])
        case SubscriptionNotFoundError():
            return _problem(request, 404, "Subscription not found", str(exc))
        case DomainError():
            return _problem(request, 409, "Conflict with the run's state", str(exc))
        case ConcurrencyError():
            return _problem(request, 503, "Busy", str(exc), headers={"Retry-After": "1"})
        case NotAuthorizedException():
            return _problem(request, 401, "Unauthorized", exc.detail,
                            headers={"WWW-Authenticate": 'Bearer realm="controlroom"'})
        case ValidationException():
            return _problem(request, 400, "Bad request", exc.detail, _litestar_errors(exc))
        case HTTPException():
            title = {413: "Payload too large", 404: "Not found", 405: "Method not allowed",
                     403: "Forbidden"}.get(exc.status_code, "HTTP error")
            return _problem(request, exc.status_code, title, exc.detail, headers=exc.headers)
        case _:
            if is_unavailable(exc):
                log.warning("database unavailable: %s", type(exc).__name__)
                return _problem(request, 503, "Service unavailable",
                                "the database is unreachable; retry shortly",
                                headers={"Retry-After": "5"})
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return _problem(request, 500, "Internal server error", "an unexpected error occurred")


def _litestar_errors(exc: ValidationException) -> list[FieldError] | None:
    extra = exc.extra if isinstance(exc.extra, list) else None
    if not extra:
        return None
    return [{"field": str(e.get("key", "")), "message": str(e.get("message", ""))} for e in extra]


def is_unavailable(exc: BaseException) -> bool:
    """True for errors meaning the database can't be reached right now."""
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"OperationalError", "InterfaceError", "ConnectionDoesNotExistError",
                         "CannotConnectNowError", "PoolTimeout", "ConnectionRefusedError",
                         "TooManyConnectionsError", "InterfaceWarning"}) or isinstance(
        exc, (ConnectionError, TimeoutError)
    )


__all__ = ["PROBLEM_JSON", "ProblemError", "from_decode_error", "handle", "invalid"]
