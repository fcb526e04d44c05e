"""create_app: the Litestar application, given its dependencies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from controlroom import __version__
from controlroom.api import connections, ops, problems
from controlroom.api.api_keys import routes as api_keys
from controlroom.api.artifacts import listing, uploads
from controlroom.api.artifacts import routes as artifacts
from controlroom.api.auth import BearerAuthMiddleware, TokenVerifier
from controlroom.api.deps import Deps
from controlroom.api.events import routes as events
from controlroom.api.gate import hook as gate
from controlroom.api.lineage import openlineage
from controlroom.api.lineage import routes as lineage
from controlroom.api.openapi import document as openapi
from controlroom.api.runs import routes as runs
from controlroom.api.runs.validate import validate_job
from controlroom.api.webhooks.inbound import continue_run
from controlroom.api.webhooks.routes import WEBHOOK_ROUTES

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
            runs.submit_job, validate_job, runs.get_run, runs.list_runs,
            runs.post_events, runs.cancel_run, runs.get_logs,
            ops.healthz, ops.readyz,
            events.run_events, events.tenant_events,
            artifacts.get_artifact, artifacts.get_artifact_content,
            lineage.lineage_graph, openlineage.post_lineage,
            uploads.upload_artifact, listing.list_artifacts,
            connections.put_connection, connections.list_connections,
            connections.get_connection, connections.delete_connection,
            api_keys.create_api_key, api_keys.list_api_keys,
            api_keys.revoke_api_key,
            *WEBHOOK_ROUTES, continue_run,
        ],
        middleware=[DefineMiddleware(BearerAuthMiddleware, exclude=OPEN_PATHS)],
        before_request=gate.before_request,
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
    openapi.complete(app, OPEN_PATHS)
    return app

