"""What every request passes before its handler runs: the app's one `before_request` hook."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.routes import HTTPRoute

from controlroom.api.gate import json_body, parameters


def allowed_methods(request: Request[Any, Any, Any]) -> str:
    """The `Allow` value of the request's path: every method any of its handlers answers."""
    paths = request.route_handler.paths
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, HTTPRoute) and route.path in paths:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def before_request(request: Request[Any, Any, Any]) -> Response[None] | None:
    """Answer OPTIONS; check query/path parameters and a JSON body before the handler sees them."""
    if request.method == "OPTIONS":
        # Litestar's own OPTIONS answer lists only the methods of the first handler
        # registered for a path (litestar 2.x builds it before the others are added).
        return Response(None, status_code=204, headers={"Allow": allowed_methods(request)})
    parameters.check(request)
    await json_body.guard(request)
    return None
