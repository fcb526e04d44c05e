"""OpenLineage events from the real `openlineage-python` client become lineage edges.

The client's HTTP transport posts to `<url>/api/v1/lineage` — Marquez's path — so the API
is served for real (uvicorn on a free port, in a thread) over its own database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.transport.http import (
    ApiKeyTokenProvider,
    HttpCompression,
    HttpConfig,
    HttpTransport,
)

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import bootstrap, build_app
from controlroom.domain.lineage.model import job_id
from controlroom.settings import Settings
from tests.live_events import serve_in_thread

PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/client/python"


@pytest.fixture(scope="module")
def served(make_server_database: Callable[[], str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base url, JWT secret) of an API really listening."""
    settings = Settings(database_url=make_server_database(), data_dir=tmp_path_factory.mktemp("ol-data"),
                        jwt_secret="ol-secret-" + uuid.uuid4().hex)
    with bootstrap(settings, run_worker=False) as services, \
            serve_in_thread(build_app(services)) as url:
        yield url, services.jwt_secret


def _client(url: str, token: str, **config: Any) -> OpenLineageClient:
    auth = ApiKeyTokenProvider({"apiKey": token})
    return OpenLineageClient(transport=HttpTransport(HttpConfig(url=url, auth=auth, **config)))


def _event(state: RunState, run_id: str, inputs: list[str], outputs: list[str]) -> RunEvent:
    return RunEvent(
        eventType=state, eventTime=datetime.now(UTC).isoformat(), producer=PRODUCER,
        run=Run(runId=run_id), job=Job(namespace="spark", name="orders_etl"),
        inputs=[InputDataset(namespace="postgres://db:5432", name=n) for n in inputs],
        outputs=[OutputDataset(namespace="postgres://db:5432", name=n) for n in outputs],
    )


def test_events_from_the_openlineage_client_build_the_graph(served: tuple[str, str]) -> None:
    url, secret = served
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    token = issue_token(secret, tenant=tenant, sub="spark", scopes=["lineage:write"], ttl_s=600)
    reader = issue_token(secret, tenant=tenant, sub="admin", scopes=ALL_SCOPES, ttl_s=600)
    run_id = str(uuid.uuid4())
    client = _client(url, token)
    client.emit(_event(RunState.START, run_id, ["public.orders"], []))
    client.emit(_event(RunState.COMPLETE, run_id, ["public.orders", "public.customers"],
                       ["mart.orders_daily"]))
    # gzip, as the client sends when asked to compress
    _client(url, token, compression=HttpCompression.GZIP).emit(
        _event(RunState.COMPLETE, str(uuid.uuid4()), ["mart.orders_daily"], ["bi.dashboard"]))

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {reader}"}) as http:
        r = http.get("/api/v1/lineage/graph",
                     params={"entity": "mart.orders_daily", "depth": 2})
        assert r.status_code == 200, r.text
        body = r.json()
    upstream = {(i["entity"], i["run_id"], i["job_id"]) for i in body["upstream"]}
    jid = str(job_id(tenant, "spark", "orders_etl"))
    assert upstream == {("public.orders", run_id, jid), ("public.customers", run_id, jid)}
    assert {i["entity"] for i in body["downstream"]} == {"bi.dashboard"}
    assert body["namespace"] == "postgres://db:5432"
    assert {n["entity"] for n in body["nodes"]} == {
        "mart.orders_daily", "public.orders", "public.customers", "bi.dashboard"}


def test_the_client_is_refused_without_a_valid_token(served: tuple[str, str]) -> None:
    url, secret = served
    event = _event(RunState.COMPLETE, str(uuid.uuid4()), ["a.b"], ["c.d"])
    with pytest.raises(Exception, match="401"):
        _client(url, "not-a-token").emit(event)
    reader = issue_token(secret, tenant="t", sub="x", scopes=["lineage:read"], ttl_s=600)
    with pytest.raises(Exception, match="403"):
        _client(url, reader).emit(event)
