"""Inbound `POST /api/v1/webhooks/continue`: bearer or Standard Webhooks signature, deduplicated."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from standardwebhooks.webhooks import Webhook

from controlroom.cli import Services
from tests.webhook_service import Tenant, webhook_service

CONTINUE = "/api/v1/webhooks/continue"


@pytest.fixture(scope="module")
def service(make_server_database: Callable[[], str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, TestClient[Any]]]:
    with webhook_service(make_server_database(), tmp_path_factory.mktemp("inbound")) as running:
        yield running


@pytest.fixture
def tenant(service: tuple[Services, TestClient[Any]]) -> Tenant:
    return Tenant(*service)


def signed(secret: str, body: dict[str, Any], webhook_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A body and the Standard Webhooks headers signing it, made by the library itself."""
    raw = msgspec.json.encode(body)
    msg_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    return raw, {"content-type": "application/json", "webhook-id": msg_id,
                 "webhook-timestamp": str(int(now.timestamp())),
                 "webhook-signature": Webhook(secret).sign(msg_id, now, raw.decode())}


def status_of(tenant: Tenant, run_id: str) -> str:
    return str(tenant.client.get(f"/api/v1/runs/{run_id}", headers=tenant.auth).json()["status"])


def test_a_signed_report_completes_a_queued_run(tenant: Tenant) -> None:
    secret = tenant.rotate()
    run_id = tenant.submit()
    raw, headers = signed(secret, {"run_id": run_id, "status": "completed", "summary": "ok"})
    resp = tenant.client.post(CONTINUE, content=raw, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"run_id": run_id, "status": "completed", "duplicate": False}
    run = tenant.client.get(f"/api/v1/runs/{run_id}", headers=tenant.auth).json()
    assert run["status"] == "completed" and run["summary"] == "ok" and run["started_at"]


@pytest.mark.parametrize("tamper", ["wrong secret", "changed body", "old timestamp", "garbage",
                                    "no headers", "unknown run"])
def test_a_report_whose_signature_does_not_verify_is_401(tenant: Tenant, tamper: str) -> None:
    secret = tenant.rotate()
    run_id = tenant.submit()
    body = {"run_id": run_id, "status": "completed"}
    raw, headers = signed(secret, body)
    match tamper:
        case "wrong secret":
            raw, headers = signed("whsec_" + "QUJD" * 8, body)
        case "changed body":
            raw = msgspec.json.encode({**body, "status": "failed"})
        case "old timestamp":
            old = int(time.time()) - 3600
            headers["webhook-timestamp"] = str(old)
            headers["webhook-signature"] = Webhook(secret).sign(
                headers["webhook-id"], datetime.fromtimestamp(old, UTC), raw.decode())
        case "garbage":
            headers["webhook-signature"] = "v1 nonsense,,"
        case "no headers":
            headers = {"content-type": "application/json"}
        case "unknown run":
            raw, headers = signed(secret, {"run_id": str(uuid.uuid4()), "status": "completed"})
    resp = tenant.client.post(CONTINUE, content=raw, headers=headers)
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert status_of(tenant, run_id) == "queued"


def test_another_tenants_secret_does_not_verify(tenant: Tenant) -> None:
    other = Tenant(tenant.services, tenant.client)
    run_id = tenant.submit()
    tenant.rotate()
    raw, headers = signed(other.rotate(), {"run_id": run_id, "status": "completed"})
    assert tenant.client.post(CONTINUE, content=raw, headers=headers).status_code == 401


def test_a_redelivered_report_is_answered_again_and_applied_once(tenant: Tenant) -> None:
    secret = tenant.rotate()
    run_id = tenant.submit()
    raw, headers = signed(secret, {"run_id": run_id, "status": "failed", "summary": "broke"})
    first = tenant.client.post(CONTINUE, content=raw, headers=headers)
    again = tenant.client.post(CONTINUE, content=raw, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["duplicate"] is True and again.headers["idempotent-replayed"] == "true"
    # Applied twice, the second would be a 409 (a failed run can't fail again).
    assert status_of(tenant, run_id) == "failed"


def test_completing_a_cancelled_run_is_409(tenant: Tenant) -> None:
    run_id = tenant.submit()
    assert tenant.client.post(f"/api/v1/runs/{run_id}/cancel", headers=tenant.auth).status_code == 202
    resp = tenant.report(run_id, "completed")
    assert resp.status_code == 409
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "cancelled" in resp.json()["detail"]
    assert status_of(tenant, run_id) == "cancelled"


def test_bearer_reports_drive_a_run_through_its_lifecycle(tenant: Tenant) -> None:
    run_id = tenant.submit()
    assert tenant.report(run_id, "running").json()["status"] == "running"
    assert tenant.report(run_id, "completed", summary="fine").json()["status"] == "completed"
    assert tenant.report(run_id, "running").status_code == 409


def test_bearer_auth_is_checked_and_scoped(tenant: Tenant) -> None:
    run_id = tenant.submit()
    body = {"run_id": run_id, "status": "completed"}
    assert tenant.client.post(CONTINUE, json=body, headers={"Authorization": "Bearer nope"}
                              ).status_code == 401
    other = Tenant(tenant.services, tenant.client)
    assert other.report(run_id, "completed").status_code == 404
    assert tenant.report(run_id, "exploded").json()["errors"][0]["field"] == "status"
    assert status_of(tenant, run_id) == "queued"
