"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get

from controlroom.api.deps import Deps


@get("/healthz", exclude_from_auth=True, include_in_schema=True)
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@get("/readyz", exclude_from_auth=True)
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Ready when the database answers, writes go through and projections are applied."""
    deps: Deps = request.app.state.deps
    checks: dict[str, Any] = {}
    try:
        await deps.reads.ping()
        checks["database"] = "ok"
    except Exception as e:  # any failure means not ready
        checks["database"] = f"unavailable: {type(e).__name__}"
    if (failing := await deps.write_health()) is not None:  # red while writes fail
        checks["writes"] = f"failing: {failing}"
    else:
        checks["writes"] = "ok"
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "unavailable", "checks": checks}
    if warning := request.app.state.get("sandbox_warning"):
        body["warnings"] = {"sandbox": warning}  # not unready: a single-tenant install may run so
    if (health := request.app.state.get("services_health")) is not None:
        # Information, not readiness: a loop in standby or retrying is how a replica should be.
        body["services"] = [msgspec.to_builtins(h) for h in health()]
    return Response(
        body,
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )
