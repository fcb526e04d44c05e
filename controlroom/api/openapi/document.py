"""The OpenAPI document made truthful, in one pass over the app's routes.

Litestar documents what a handler's signature shows. Everything else an operation really
does is added here, once: its errors as `application/problem+json` (by the rules in
`problem_statuses`, plus facts.EXTRA_STATUSES), the body it decodes by hand, the
bearer token it needs, and the bigint range of its integer parameters (parameters.py
enforces it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    Components,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.routes import HTTPRoute

from controlroom.api.gate.parameters import int_parameters
from controlroom.api.openapi import facts
from controlroom.api.problems import PROBLEM_JSON

BEARER = "bearer"
SIGNATURE = "webhookSignature"
NO_NUL = r"^[^\u0000]*$"
"""PostgreSQL text can't hold NUL: no string parameter or body field may carry one."""
PREFIX = "request."
"""Request body components are named apart: a body's `Progress` is not the run's `Progress`."""
TITLES = {
    400: "Bad request: malformed JSON or a parameter out of range (named in `errors`)",
    401: "Missing or invalid bearer token",
    403: "The token lacks the scope this route needs",
    404: "Not found (or not visible to this token)",
    409: "Conflict with the current state",
    413: "Request body too large",
    415: "Content-Type is not JSON",
    422: "Validation failed: each field at fault is named in `errors`",
    503: "Unavailable: the database can't be reached or is busy; retry after `Retry-After`",
}
FIELD_ERROR = {
    "type": "object", "required": ["field", "message"], "additionalProperties": True,
    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
}
PROBLEM = {
    "type": "object", "description": "An RFC 9457 problem document.",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"}, "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ProblemFieldError"}},
    },
}
_WRITES = {"POST", "PUT", "PATCH"}


def operations(app: Litestar) -> Iterator[tuple[str, HTTPRouteHandler, Operation]]:
    """Every documented operation as ("METHOD /path", its handler, its OpenAPI operation)."""
    paths = app.openapi_schema.paths or {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in paths:
            continue
        item = paths[route.path_format]
        for handler in route.route_handlers:
            for method in handler.http_methods:
                op = getattr(item, method.lower(), None)
                if isinstance(op, Operation):
                    yield f"{method} {route.path_format}", handler, op


def problem_statuses(key: str, handler: HTTPRouteHandler, op: Operation, *, secured: bool) -> set[int]:
    """The error statuses an operation answers as problems: the rules, then its own extras."""
    method, path = key.split(" ", 1)
    queries = [p for p in op.parameters or [] if getattr(p, "param_in", None) == "query"]
    statuses = {400, 503}  # a parameter with a NUL byte anywhere; the database away
    if secured:
        statuses |= {401, 403}
    if "{" in path:
        statuses.add(404)
    has_body = method in _WRITES and key not in facts.NO_BODY
    if has_body:
        statuses.add(413)
        if handler.opt.get("body") != "raw":
            statuses.add(415)
    if has_body or queries:
        statuses.add(422)
    return statuses | set(facts.EXTRA_STATUSES.get(key, {}))


def complete(app: Litestar, open_paths: Iterable[str]) -> None:
    """Add what Litestar can't see to the app's OpenAPI document (built once, then served)."""
    openapi = app.openapi_schema
    components = openapi.components
    # Plain JSON Schema dicts where Litestar's types want its Schema objects: the document
    # serializes them as they are.
    components.schemas["Problem"] = PROBLEM  # type: ignore[assignment]
    components.schemas["ProblemFieldError"] = FIELD_ERROR  # type: ignore[assignment]
    components.security_schemes = {
        BEARER: SecurityScheme(type="http", scheme="bearer", bearer_format="JWT or API key (cr_…)"),
        SIGNATURE: SecurityScheme(
            type="apiKey", name="webhook-signature", security_scheme_in="header",
            description="Standard Webhooks signature with the tenant's secret (with webhook-id, "
                        "webhook-timestamp)"),
    }
    bodies = _body_schemas(components)
    open_res = [re.compile(p) for p in open_paths]
    for key, handler, op in operations(app):
        path = key.split(" ", 1)[1]
        is_open = bool(handler.opt.get("exclude_from_auth")) or any(r.search(path) for r in open_res)
        if key == "POST /api/v1/webhooks/continue":
            op.security = [{BEARER: []}, {SIGNATURE: []}]
        elif not is_open:
            op.security = [{BEARER: []}]
        _document_body(key, op, bodies)
        _document_responses(key, handler, op, secured=op.security is not None)
        bounds = int_parameters(handler)
        for param in op.parameters or []:
            schema = getattr(param, "schema", None)
            if isinstance(schema, Schema):
                _document_parameter(schema, *bounds.get(getattr(param, "name", ""), (None, None)))


def _body_schemas(components: Components) -> dict[str, Any]:
    """JSON Schemas of the JSON bodies, by operation; their parts become components."""
    keys = list(facts.JSON_BODIES)
    schemas, parts = msgspec.json.schema_components(
        [facts.JSON_BODIES[k] for k in keys], ref_template=f"#/components/schemas/{PREFIX}{{name}}")
    for name, schema in parts.items():
        components.schemas[PREFIX + name] = schema
    return dict(zip(keys, schemas, strict=True))


def _document_body(key: str, op: Operation, bodies: dict[str, Any]) -> None:
    if key in bodies:
        op.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=bodies[key])},
            required=True)
    elif key in facts.ANY_JSON_BODY:
        op.request_body = RequestBody(
            # any JSON: the empty schema, a dict where Litestar's types want a Schema
            content={"application/json": OpenAPIMediaType(schema={})},  # type: ignore[arg-type]
            description=facts.ANY_JSON_BODY[key], required=False)
    elif key in facts.RAW_BODIES:
        op.request_body = RequestBody(content={
            media: OpenAPIMediaType(schema=schema)
            for media, schema in facts.RAW_BODIES[key].items()}, required=False)


def _document_responses(key: str, handler: HTTPRouteHandler, op: Operation, *, secured: bool) -> None:
    responses = op.responses = dict(op.responses or {})
    own = next((r for s, r in sorted(responses.items()) if s.startswith("2")), None)
    if key in facts.BINARY_ANSWERS and isinstance(own, OpenAPIResponse):
        own.content = {"*/*": OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY))}
    for status, description in facts.OWN_BODY_STATUSES.get(key, {}).items():
        content = None if status == 304 or not isinstance(own, OpenAPIResponse) else own.content
        responses[str(status)] = OpenAPIResponse(description=description, content=content)
    if key in facts.EVENT_STREAMS and isinstance(own, OpenAPIResponse):
        own.content = {**(own.content or {}), "text/event-stream": OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.STRING, description="server-sent events"))}
    problem = Reference(ref="#/components/schemas/Problem")
    for status in sorted(problem_statuses(key, handler, op, secured=secured)):
        if str(status) in responses and status not in (400,):
            continue  # documented with its own body already (readyz's 503)
        description = facts.EXTRA_STATUSES.get(key, {}).get(status) or TITLES.get(status, "Error")
        responses[str(status)] = OpenAPIResponse(
            description=description, content={PROBLEM_JSON: OpenAPIMediaType(schema=problem)})


def _document_parameter(schema: Schema, minimum: int | None, maximum: int | None) -> None:
    """What is enforced: an integer's bounds (the route's, else bigint's), no NUL in a string.

    Litestar drops a bound of an optional parameter (`int | None`) from its schema.
    """
    for part in (*(schema.one_of or ()), *(schema.any_of or ())):
        if isinstance(part, Schema):
            _document_parameter(part, minimum, maximum)
    if schema.type == OpenAPIType.INTEGER and minimum is not None and maximum is not None:
        schema.minimum, schema.maximum = minimum, maximum
    elif schema.type == OpenAPIType.STRING and schema.pattern is None and not schema.enum \
            and schema.format is None:
        schema.pattern = NO_NUL
