"""Only the health, metrics and OpenAPI paths answer without a token — exactly those paths.

A path parameter that happens to be `healthz`, `readyz`, `schema…` or `metrics` must not turn
an `/api` route into an open one (it did: the exemption matched anywhere in the path).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import TestClient

SEGMENTS = ["healthz", "readyz", "schema", "schema-x", "metrics"]
PARAM = re.compile(r"\{[^}:]+:str\}")
"""Only string parameters can take these words; a typed one (uuid, int) 404s before auth."""


def api_routes(client: TestClient[Any]) -> list[tuple[str, str]]:
    """Every (method, path template) under /api with a string path parameter."""
    found = []
    for route in client.app.routes:
        if not route.path.startswith("/api/") or not PARAM.search(route.path):
            continue
        for method in sorted(route.methods - {"OPTIONS", "HEAD"}):
            found.append((method, route.path))
    return found


def test_every_api_route_with_such_a_segment_still_needs_a_token(client: TestClient[Any]) -> None:
    routes = api_routes(client)
    assert len(routes) >= 4, routes  # connections, api-keys, subscriptions…
    open_by_design = {("POST", "/api/v1/webhooks/continue")}
    for method, template in routes:
        if (method, template) in open_by_design:
            continue
        for segment in SEGMENTS:
            path = PARAM.sub(segment, template)
            resp = client.request(method, path)
            assert resp.status_code == 401, (method, path, resp.status_code, resp.text)
            assert resp.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/schema/openapi.json"])
def test_the_open_paths_stay_open(client: TestClient[Any], path: str) -> None:
    assert client.get(path).status_code == 200
