"""Outbound webhooks to a real receiver on 127.0.0.1: signed, retried, logged, never lost."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from controlroom.cli import Services
from tests.webhook_receiver import Receiver
from tests.webhook_service import Tenant, webhook_service


@pytest.fixture(scope="module")
def service(make_server_database: Callable[[], str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, TestClient[Any]]]:
    with webhook_service(make_server_database(), tmp_path_factory.mktemp("webhooks")) as running:
        yield running


@pytest.fixture
def tenant(service: tuple[Services, TestClient[Any]]) -> Tenant:
    return Tenant(*service)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_a_completed_run_calls_on_complete_once_signed_with_the_tenant_secret(
    tenant: Tenant, receiver: Receiver,
) -> None:
    receiver.secrets = [tenant.rotate()]
    run_id = tenant.submit(on_complete=receiver.url("/done"), on_fail=receiver.url("/failed"))
    assert tenant.report(run_id, "completed", summary="all good",
                         artifacts=[{"path": "report.html", "url": "https://ci.example/r.html"}]
                         ).status_code == 200

    [got] = receiver.wait_for(lambda rs: len(rs) >= 1)
    assert got.path == "/done" and got.verified_by == receiver.secrets
    assert got.webhook_id.startswith("msg_")
    body = got.json
    assert body["type"] == "run.completed" and body["timestamp"] and body["position"] > 0
    data = body["data"]
    assert {k: data[k] for k in ("run_id", "status", "summary", "attempt")} == {
        "run_id": run_id, "status": "completed", "summary": "all good", "attempt": 1}
    assert data["artifacts"] == [{"path": "report.html", "url": "https://ci.example/r.html"}]
    assert data["started_at"] and data["completed_at"]
    [delivery] = tenant.wait_deliveries(run_id, lambda ds: ds and ds[0]["status"] == "delivered")
    assert delivery["webhook_id"] == got.webhook_id and delivery["target"] == "on_complete"
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 200 and attempt["latency_ms"] >= 0 and attempt["error"] is None
    assert len(receiver.received) == 1


def test_a_failed_or_cancelled_run_calls_on_fail_and_never_on_complete(
    tenant: Tenant, receiver: Receiver,
) -> None:
    receiver.secrets = [tenant.rotate()]
    failed = tenant.submit(on_complete=receiver.url("/done"), on_fail=receiver.url("/failed"))
    cancelled = tenant.submit(on_complete=receiver.url("/done"), on_fail=receiver.url("/failed"))
    assert tenant.report(failed, "failed", summary="boom", reason="timeout").status_code == 200
    assert tenant.report(cancelled, "cancelled").status_code == 200

    got = receiver.wait_for(lambda rs: len(rs) >= 2)
    assert {r.path for r in got} == {"/failed"} and all(r.verified_by for r in got)
    by_run = {r.json["data"]["run_id"]: r.json for r in got}
    assert by_run[failed]["type"] == "run.failed"
    assert by_run[failed]["data"]["error"] == {"reason": "timeout", "message": "boom"}
    assert by_run[cancelled]["type"] == "run.cancelled"
    assert by_run[cancelled]["data"]["status"] == "cancelled"


def test_a_receiver_that_is_down_gets_the_callback_once_it_is_back(
    tenant: Tenant, receiver: Receiver,
) -> None:
    receiver.secrets = [tenant.rotate()]
    receiver.stop()
    run_id = tenant.submit(on_complete=receiver.url())
    tenant.report(run_id, "completed")
    [pending] = tenant.wait_deliveries(run_id, lambda ds: ds and len(ds[0]["attempts"]) >= 2)
    assert pending["status"] == "pending" and pending["next_retry_at"] is not None
    assert all(a["status_code"] is None and a["error"] for a in pending["attempts"])

    receiver.start()
    [got] = receiver.wait_for(lambda rs: len(rs) >= 1)
    assert got.verified_by and got.webhook_id == pending["webhook_id"]
    [done] = tenant.wait_deliveries(run_id, lambda ds: ds[0]["status"] == "delivered")
    assert done["attempts"][-1]["status_code"] == 200 and done["next_retry_at"] is None


def test_5xx_and_429_are_retried_with_the_same_webhook_id_and_logged(
    tenant: Tenant, receiver: Receiver,
) -> None:
    answers = iter([503, 429, 200])
    receiver.answer = lambda r: next(answers)
    run_id = tenant.submit(on_complete=receiver.url())
    tenant.report(run_id, "completed")

    got = receiver.wait_for(lambda rs: len(rs) >= 3)
    assert len({r.webhook_id for r in got}) == 1
    [delivery] = tenant.wait_deliveries(run_id, lambda ds: ds[0]["status"] == "delivered")
    codes = [a["status_code"] for a in delivery["attempts"]]
    assert codes == [503, 429, 200]
    assert all(a["next_retry_at"] for a in delivery["attempts"][:2])


def test_a_4xx_other_than_410_fails_the_delivery_without_retrying(
    tenant: Tenant, receiver: Receiver,
) -> None:
    receiver.answer = lambda r: 400
    run_id = tenant.submit(on_complete=receiver.url())
    tenant.report(run_id, "completed")
    [delivery] = tenant.wait_deliveries(run_id, lambda ds: ds and ds[0]["status"] == "failed")
    assert [a["status_code"] for a in delivery["attempts"]] == [400]


def test_410_gone_disables_a_subscription_and_stops_a_callback(
    tenant: Tenant, receiver: Receiver,
) -> None:
    receiver.answer = lambda r: 410
    sub = tenant.client.post("/api/v1/webhooks/subscriptions", headers=tenant.auth,
                             json={"url": receiver.url("/sub"), "events": ["run.completed"]})
    assert sub.status_code == 201, sub.text
    first = tenant.submit(on_complete=receiver.url("/cb"))
    tenant.report(first, "completed")
    deliveries = tenant.wait_deliveries(first, lambda ds: len(ds) == 2 and all(
        d["status"] == "gone" for d in ds))
    assert all(len(d["attempts"]) == 1 for d in deliveries)

    tenant.wait_until(lambda: tenant.client.get("/api/v1/webhooks/subscriptions", headers=tenant.auth)
                      .json()["subscriptions"][0]["status"] == "disabled")
    second = tenant.submit()
    tenant.report(second, "completed")
    assert tenant.wait_deliveries(second, lambda ds: True) == []
    assert len(receiver.received) == 2


def test_during_a_rotation_grace_period_both_signatures_are_sent(
    tenant: Tenant, receiver: Receiver,
) -> None:
    old = tenant.rotate()
    resp = tenant.client.post("/api/v1/webhooks/secret", headers=tenant.auth)
    new, until = resp.json()["secret"], resp.json()["previous_valid_until"]
    assert new != old and new.startswith("whsec_") and until is not None
    receiver.secrets = [old, new]
    run_id = tenant.submit(on_complete=receiver.url())
    tenant.report(run_id, "completed")

    [got] = receiver.wait_for(lambda rs: len(rs) >= 1)
    assert got.verified_by == [old, new]
    assert len(got.headers["webhook-signature"].split(" ")) == 2


def test_subscriptions_get_the_events_they_ask_for_and_replay_from_a_position(
    tenant: Tenant, receiver: Receiver,
) -> None:
    receiver.secrets = [tenant.rotate()]
    resp = tenant.client.post("/api/v1/webhooks/subscriptions", headers=tenant.auth, json={
        "url": receiver.url("/n8n"), "events": ["run.submitted", "run.started", "run.completed"]})
    sub_id = resp.json()["subscription_id"]
    run_id = tenant.submit()
    tenant.report(run_id, "completed", summary="done")

    got = receiver.wait_for(lambda rs: len(rs) >= 3)
    types = [r.json["type"] for r in sorted(got, key=lambda r: r.json["position"])]
    assert types == ["run.submitted", "run.started", "run.completed"]
    assert all(r.verified_by for r in got)
    first = min(r.json["position"] for r in got)

    replay = tenant.client.post(f"/api/v1/webhooks/subscriptions/{sub_id}/replay?from={first}",
                                headers=tenant.auth)
    assert replay.status_code == 202 and replay.json()["queued"] == 3
    again = receiver.wait_for(lambda rs: len(rs) >= 6)
    assert sorted(r.webhook_id for r in again[3:]) == sorted(r.webhook_id for r in got)

    assert tenant.client.delete(f"/api/v1/webhooks/subscriptions/{sub_id}",
                                headers=tenant.auth).status_code == 204
    listed = tenant.client.get("/api/v1/webhooks/subscriptions", headers=tenant.auth).json()
    assert listed == {"subscriptions": []}
    assert tenant.client.delete(f"/api/v1/webhooks/subscriptions/{sub_id}",
                                headers=tenant.auth).status_code == 404


def test_a_delivery_can_be_redelivered_with_the_same_webhook_id(
    tenant: Tenant, receiver: Receiver,
) -> None:
    run_id = tenant.submit(on_complete=receiver.url())
    tenant.report(run_id, "completed")
    [first] = receiver.wait_for(lambda rs: len(rs) >= 1)
    [delivery] = tenant.wait_deliveries(run_id, lambda ds: ds and ds[0]["status"] == "delivered")

    resp = tenant.client.post(f"/api/v1/webhooks/deliveries/{delivery['delivery_id']}/redeliver",
                              headers=tenant.auth)
    assert resp.status_code == 202, resp.text
    second = receiver.wait_for(lambda rs: len(rs) >= 2)[1]
    assert second.webhook_id == first.webhook_id
    other = Tenant(tenant.services, tenant.client)
    assert other.client.post(f"/api/v1/webhooks/deliveries/{delivery['delivery_id']}/redeliver",
                             headers=other.auth).status_code == 404
    assert other.client.get(f"/api/v1/runs/{run_id}/deliveries", headers=other.auth).status_code == 404
