"""create_app: the Litestar application, given its dependencies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from controlroom import __version__
from controlroom.api import (
    artifact_listing,
    artifact_uploads,
    openapi_doc,
    openlineage,
    problems,
    request_gate,
    routes_api_keys,
    routes_artifacts,
    routes_connections,
    routes_events,
    routes_lineage,
    routes_ops,
    routes_runs,
)
from controlroom.api.auth import BearerAuthMiddleware, TokenVerifier
from controlroom.api.deps import Deps
from controlroom.api.routes_continue import continue_run
from controlroom.api.routes_validate import validate_job
from controlroom.api.routes_webhooks import WEBHOOK_ROUTES

OPEN_PATHS = [r"^/healthz$", r"^/readyz$", r"^/schema(?:/|$)", r"^/metrics$"]
"""Anchored: Litestar searches these anywhere in a path, and `/api/v1/connections/healthz`
must still need a token."""


def create_app(
    verifier: TokenVerifier,
    open_deps: Callable[[], AbstractAsyncContextManager[Deps]],
    *,
    max_body_bytes: int,
    debug: bool = False,
) -> Litestar:
    """The API; `open_deps` opens the database-backed dependencies for its lifetime."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_deps() as deps:
            app.state.deps = deps
            yield

    app = Litestar(
        route_handlers=[
            routes_runs.submit_job, validate_job, routes_runs.get_run, routes_runs.list_runs,
            routes_runs.post_events, routes_runs.cancel_run, routes_runs.get_logs,
            routes_ops.healthz, routes_ops.readyz,
            routes_events.run_events, routes_events.tenant_events,
            routes_artifacts.get_artifact, routes_artifacts.get_artifact_content,
            routes_lineage.lineage_graph, openlineage.post_lineage,
            artifact_uploads.upload_artifact, artifact_listing.list_artifacts,
            routes_connections.put_connection, routes_connections.list_connections,
            routes_connections.get_connection, routes_connections.delete_connection,
            routes_api_keys.create_api_key, routes_api_keys.list_api_keys,
            routes_api_keys.revoke_api_key,
            *WEBHOOK_ROUTES, continue_run,
        ],
        middleware=[DefineMiddleware(BearerAuthMiddleware, exclude=OPEN_PATHS)],
        before_request=request_gate.before_request,
        exception_handlers={Exception: problems.handle},
        lifespan=[lifespan],
        state=State({"verifier": verifier}),
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Control Room", version=__version__, path="/schema",
            description="Submit jobs, watch runs, keep their lineage.",
        ),
        debug=debug,
        logging_config=None,  # the CLI configures logging once for the process
    )
    openapi_doc.complete(app, OPEN_PATHS)
    return app

