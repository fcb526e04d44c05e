"""Webhook settings changed while runs flow: none lost, none applied late, none outliving its delete.

Runs are submitted and completed through the API by several clients at once, so the outbox
projection has events at hand and batches them, while the tenant creates and deletes
subscriptions and rotates its secret. Afterwards, against the log's own positions: every
subscription was listed as soon as its 201 came back, got a delivery for every event it wanted
from its creation to its deletion and none after, and every webhook about an event after a
rotation was signed with that secret (or a later one).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from eventsourcing.utils import get_topic

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services, bootstrap, build_app
from controlroom.domain.webhooks.secret import WebhookSecret, secret_id
from controlroom.domain.webhooks.subscription import Subscription
from controlroom.settings import Settings, WebhookSettings
from tests.conftest import job
from tests.live_events import serve_in_thread
from tests.webhook_receiver import Receiver
from tests.webhook_service import FAST_RETRIES

API = "/api/v1"
SUBS = "/api/v1/webhooks/subscriptions"
CLIENTS = 3
CHANGES = 12
WANTS = ["run.submitted", "run.completed"]
FOREVER = 2**62
ROTATED, CREATED, DELETED = (get_topic(t) for t in (
    WebhookSecret.WebhookSecretRotated, Subscription.SubscriptionCreated,
    Subscription.SubscriptionDeleted))


@pytest.fixture(scope="module")
def served(make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Services, str]]:
    """A service (no worker: runs are reported through the inbound hook) behind real HTTP."""
    settings = Settings(
        database_url=make_server_database(), data_dir=tmp_path_factory.mktemp("webhooks-load"),
        jwt_secret="load-" + uuid.uuid4().hex,
        webhooks=WebhookSettings(callback_allowlist="127.0.0.1", retry_schedule=FAST_RETRIES,
                                 timeout_s=2.0))
    with bootstrap(settings, run_worker=False) as services, \
            serve_in_thread(build_app(services)) as url:
        yield services, url


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def flow_of_runs(url: str, auth: dict[str, str], callback: str, stop: threading.Event,
                 errors: list[BaseException]) -> None:
    """Submit runs and complete them, back to back, until told to stop."""
    try:
        with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
            while not stop.is_set():
                resp = http.post(f"{API}/jobs/run",
                                 json=job("print(1)", callbacks={"on_complete": callback}))
                assert resp.status_code == 202, resp.text
                run_id = resp.json()["run_id"]
                done = http.post(f"{API}/webhooks/continue",
                                 json={"run_id": run_id, "status": "completed"})
                assert done.status_code == 200, done.text
    except BaseException as e:  # reported by the test's thread
        errors.append(e)


def listed(http: httpx.Client) -> set[str]:
    resp = http.get(SUBS)
    assert resp.status_code == 200, resp.text
    return {s["subscription_id"] for s in resp.json()["subscriptions"]}


def positions(conn: psycopg.Connection[Any], ids: list[uuid.UUID], topic: str, *,
              every: bool = False) -> dict[Any, int]:
    """Where these aggregates' events of `topic` are in the log, by aggregate id (`every`: by
    (id, version), oldest first)."""
    rows = conn.execute(
        "SELECT originator_id, originator_version, notification_id FROM controlroom_events "
        "WHERE originator_id = ANY(%s) AND topic = %s ORDER BY notification_id",
        (ids, topic)).fetchall()
    return {(str(i), v) if every else str(i): p for i, v, p in rows}


def test_subscriptions_and_secrets_changed_while_runs_flow_all_take_effect_in_log_order(
    served: tuple[Services, str], receiver: Receiver,
) -> None:
    services, url = served
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    token = issue_token(services.jwt_secret, tenant=tenant, sub="alice", scopes=ALL_SCOPES,
                        ttl_s=600)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
        changed_while_runs_flow(services, url, auth, tenant, http, receiver)


def changed_while_runs_flow(services: Services, url: str, auth: dict[str, str], tenant: str,
                            http: httpx.Client, receiver: Receiver) -> None:
    """The scenario, with the tenant's client."""

    def rotate() -> str:
        resp = http.post(f"{API}/webhooks/secret")
        assert resp.status_code == 201, resp.text
        return str(resp.json()["secret"])

    secrets = [rotate()]
    receiver.secrets = secrets
    stop, errors = threading.Event(), list[BaseException]()
    flows = [threading.Thread(target=flow_of_runs, args=(url, auth, receiver.url("/cb"), stop,
                                                          errors)) for _ in range(CLIENTS)]
    for t in flows:
        t.start()
    created: list[str] = []
    deleted: set[str] = set()
    try:
        time.sleep(0.5)  # the flow is under way
        for i in range(CHANGES):
            resp = http.post(SUBS, json={"url": receiver.url(f"/sub/{i}"), "events": WANTS})
            assert resp.status_code == 201, resp.text
            created.append(resp.json()["subscription_id"])
            assert created[-1] in listed(http), f"subscription {i} missing right after its 201"
            if i % 2:
                victim = created[i - 1]
                assert http.delete(f"{SUBS}/{victim}").status_code == 204
                deleted.add(victim)
                assert victim not in listed(http), f"subscription {i - 1} listed after its 204"
            if i % 4 == 3:
                secrets.append(rotate())
            time.sleep(0.1)
    finally:
        stop.set()
        for t in flows:
            t.join(30)
    assert not errors, errors
    assert listed(http) == set(created) - deleted

    with psycopg.connect(services.dsn) as conn:
        def pending() -> int:
            row = conn.execute("SELECT count(*) FROM webhook_deliveries WHERE tenant_id = %s "
                               "AND status = 'pending'", (tenant,)).fetchone()
            conn.commit()
            return int(row[0]) if row else 0

        deadline = time.monotonic() + 60
        while pending():
            assert time.monotonic() < deadline, "deliveries never drained"
            time.sleep(0.2)
        ids = [uuid.UUID(s) for s in created]
        born, gone = positions(conn, ids, CREATED), positions(conn, ids, DELETED)
        rotations = list(positions(conn, [secret_id(tenant)], ROTATED, every=True).values())
        events = conn.execute("SELECT position FROM webhook_events WHERE tenant_id = %s "
                              "AND event_type = ANY(%s)", (tenant, WANTS)).fetchall()
        sent = conn.execute("SELECT subscription_id::text, position FROM webhook_deliveries "
                            "WHERE tenant_id = %s AND subscription_id IS NOT NULL",
                            (tenant,)).fetchall()
    assert len(rotations) == len(secrets)
    for sub in created:
        wanted = {p for (p,) in events if born[sub] < p < gone.get(sub, FOREVER)}
        got = {p for s, p in sent if s == sub}
        assert got == wanted, (f"subscription {created.index(sub)}: missing {wanted - got}, "
                               f"extra {got - wanted}")
    assert len(events) > 50, "too few runs flowed to tell anything"

    with receiver.lock:
        received = list(receiver.received)
    assert received
    for r in received:
        position = r.json["position"]
        if r.path.startswith("/sub/"):
            sub = created[int(r.path.removeprefix("/sub/"))]
            assert born[sub] < position < gone.get(sub, FOREVER), r.path
        newest = max(k for k, at in enumerate(rotations) if at < position)
        assert set(r.verified_by) & set(secrets[newest:]), (
            f"event {position} not signed with secret {newest} (rotated at {rotations[newest]})")
