"""The SSRF guard: callback and subscription URLs inside the network are refused — at submit
(422 naming the field) and again when delivering, on every connection.

These use the session's service, which has no allowlist (the webhook tests allow 127.0.0.1).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from controlroom.adapters.webhooks.delivery import HttpWebhookSender
from controlroom.adapters.webhooks.ssrf import CallbackGuard
from tests.conftest import job
from tests.webhook_receiver import Receiver

REFUSED = {
    "loopback": "http://127.0.0.1:9/hook",
    "private 10.x": "http://10.1.2.3/hook",
    "cloud metadata": "http://169.254.169.254/latest/meta-data/",
    "a name resolving to loopback": "http://localhost:8000/hook",
    "IPv6 loopback": "http://[::1]/hook",
    "IPv4-mapped loopback": "http://[::ffff:127.0.0.1]/hook",
    "private 192.168": "https://192.168.0.10/hook",
    "shared address space": "http://100.64.0.1/hook",
    "metadata by name": "http://metadata.google.internal/computeMetadata/v1/",
    "not http": "ftp://example.com/hook",
    "no host": "http:///hook",
    "6to4 of loopback": "http://[2002:7f00:1::]/",
    "6to4 of cloud metadata": "http://[2002:a9fe:a9fe::]/latest/meta-data/",
    "6to4 of 192.168.1.1": "http://[2002:c0a8:101::1]/hook",
    "NAT64 of loopback": "http://[64:ff9b::7f00:1]/hook",
    "local-use NAT64": "http://[64:ff9b:1::a9fe:a9fe]/hook",
    "IPv4-compatible loopback": "http://[::127.0.0.1]/hook",
    "IPv4-mapped metadata": "http://[::ffff:169.254.169.254]/hook",
    "Teredo carrying loopback": "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook",
    "localhost with a trailing dot": "http://localhost./hook",
    "a localhost subdomain": "http://api.localhost/hook",
    "metadata by name with a trailing dot": "http://metadata.google.internal./computeMetadata/v1/",
}
DELIVERY_REFUSED = [
    "http://[2002:7f00:1::]:{port}/hook", "http://[64:ff9b::7f00:1]:{port}/hook",
    "http://[::127.0.0.1]:{port}/hook", "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://localhost.:{port}/hook", "http://metadata.google.internal.:{port}/hook",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/hook",
]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.mark.parametrize("url", REFUSED.values(), ids=REFUSED.keys())
def test_submit_refuses_a_callback_inside_the_network(
    client: TestClient[Any], auth: dict[str, str], url: str,
) -> None:
    resp = client.post("/api/v1/jobs/run", headers=auth,
                       json=job("print(1)", callbacks={"on_complete": "https://example.com/ok",
                                                       "on_fail": url}))
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["errors"]
    assert error["field"] == "callbacks.on_fail"
    listed = client.get("/api/v1/runs", headers=auth).json()
    assert listed["runs"] == []


@pytest.mark.parametrize("url", REFUSED.values(), ids=REFUSED.keys())
def test_validate_refuses_the_callbacks_submit_refuses(
    client: TestClient[Any], auth: dict[str, str], url: str,
) -> None:
    body = job("print(1)", callbacks={"on_complete": "https://example.com/ok", "on_fail": url})
    report = client.post("/api/v1/jobs/validate", headers=auth, json=body).json()
    assert report["valid"] is False, report
    [schema] = [c for c in report["checks"] if c["name"] == "schema"]
    assert [e["path"] for e in schema["errors"]] == ["callbacks.on_fail"], report
    submitted = client.post("/api/v1/jobs/run", headers=auth, json=body)
    assert submitted.status_code == 422
    assert submitted.json()["errors"][0]["message"] == schema["errors"][0]["message"]


def test_validate_accepts_a_public_callback(client: TestClient[Any], auth: dict[str, str]) -> None:
    body = job("print(1)", callbacks={"on_complete": "https://93.184.215.14/hook"})
    report = client.post("/api/v1/jobs/validate", headers=auth, json=body).json()
    assert report["valid"] is True, report


def test_a_subscription_inside_the_network_is_refused(client: TestClient[Any], auth: dict[str, str]) -> None:
    resp = client.post("/api/v1/webhooks/subscriptions", headers=auth,
                       json={"url": "http://169.254.169.254/", "events": ["run.completed"]})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "url"
    bad_event = client.post("/api/v1/webhooks/subscriptions", headers=auth,
                            json={"url": "https://example.com/", "events": ["run.exploded"]})
    assert bad_event.json()["errors"][0]["field"] == "events[0]"


@pytest.mark.parametrize("url", ["https://93.184.215.14/hook", "https://hooks.example.invalid/x"],
                         ids=["public address", "a name that does not resolve (yet)"])
def test_a_public_or_unresolved_callback_is_accepted(
    client: TestClient[Any], auth: dict[str, str], url: str,
) -> None:
    """An unresolvable host can't be judged now: every delivery attempt re-checks it."""
    resp = client.post("/api/v1/jobs/run", headers=auth, json=job(
        "print(1)", callbacks={"on_complete": url}, spec={"description": "t", "dry_run": True}))
    assert resp.status_code == 202, resp.text


def test_delivery_rechecks_every_connection_so_no_request_reaches_a_forbidden_address(
    receiver: Receiver,
) -> None:
    sender = HttpWebhookSender(CallbackGuard(), timeout_s=2)
    try:
        for url in (receiver.url(), f"http://localhost:{receiver.port}/hook"):
            result = sender.send(url, "msg_x", b"{}", [])
            assert result.refused and result.status_code is None and "loopback" in (result.error or "")
    finally:
        sender.close()
    assert receiver.received == []


@pytest.mark.parametrize("url", DELIVERY_REFUSED)
def test_delivery_refuses_every_form_of_an_inside_address_before_connecting(
    receiver: Receiver, url: str,
) -> None:
    sender = HttpWebhookSender(CallbackGuard(), timeout_s=2)
    try:
        result = sender.send(url.format(port=receiver.port), "msg_x", b"{}", [])
    finally:
        sender.close()
    assert result.refused and result.status_code is None, result
    assert receiver.received == []


def test_delivery_follows_no_redirect(receiver: Receiver) -> None:
    receiver.answer = lambda r: 307
    sender = HttpWebhookSender(CallbackGuard("127.0.0.1"), timeout_s=2)
    try:
        result = sender.send(receiver.url(), "msg_x", b"{}", [])
    finally:
        sender.close()
    assert result.status_code == 307 and "redirects are not followed" in (result.error or "")
    assert len(receiver.received) == 1


def test_the_allowlist_permits_hosts_and_networks() -> None:
    assert socket.gethostbyname("localhost").startswith("127.")
    CallbackGuard("127.0.0.0/8").check("http://localhost/hook")
    CallbackGuard("localhost").check("http://localhost/hook")
    CallbackGuard("10.0.0.0/8").check("http://10.1.2.3/hook")
