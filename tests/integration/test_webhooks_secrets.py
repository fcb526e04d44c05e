"""A tenant's webhook secret is shown once — in the response that created it — and nowhere else."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from controlroom.api.auth import issue_token
from controlroom.cli import Services
from tests.webhook_receiver import Receiver
from tests.webhook_service import Tenant, webhook_service

TABLES = ("controlroom_events", "webhook_secrets", "webhook_deliveries", "webhook_events",
          "webhook_attempts", "webhook_inbound", "run_status")


@pytest.fixture(scope="module")
def service(make_server_database: Callable[[], str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, TestClient[Any]]]:
    with webhook_service(make_server_database(), tmp_path_factory.mktemp("secrets")) as running:
        yield running


def test_the_secret_appears_only_in_the_rotation_response(
    service: tuple[Services, TestClient[Any]], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = Tenant(*service)
    receiver = Receiver()
    try:
        secrets = [tenant.rotate(), tenant.rotate()]
        receiver.secrets = secrets
        run_id = tenant.submit(on_complete=receiver.url())
        tenant.report(run_id, "completed", summary="done")
        receiver.wait_for(lambda rs: len(rs) >= 1)
        [delivery] = tenant.wait_deliveries(run_id, lambda ds: ds and ds[0]["status"] == "delivered")
    finally:
        receiver.stop()
    responses = [tenant.client.get(path, headers=tenant.auth).text for path in (
        f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/deliveries", "/api/v1/webhooks/subscriptions",
        "/schema/openapi.json")]
    services = service[0]
    with psycopg.connect(services.dsn) as conn:
        stored = [str(row) for table in TABLES for row in conn.execute(f"SELECT * FROM {table}")]
    for secret in secrets:
        raw_key = secret.removeprefix("whsec_")
        body = receiver.received[0].body.decode()
        for where, texts in (("responses", responses), ("database", stored),
                             ("logs", [caplog.text]), ("received body", [body])):
            assert not any(raw_key in t for t in texts), f"secret found in {where}"
    assert delivery["attempts"][0]["status_code"] == 200


def test_rotating_needs_webhooks_write(service: tuple[Services, TestClient[Any]]) -> None:
    services, client = service
    token = issue_token(services.jwt_secret, tenant="t-scope", sub="bob", scopes=["runs:read"], ttl_s=60)
    resp = client.post("/api/v1/webhooks/secret", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403
    admin = issue_token(services.jwt_secret, tenant="t-scope", sub="bob", scopes=["admin"], ttl_s=60)
    assert client.post("/api/v1/webhooks/secret",
                       headers={"Authorization": f"Bearer {admin}"}).status_code == 201
