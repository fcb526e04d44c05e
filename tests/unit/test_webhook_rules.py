"""Pure webhook rules: the retry schedule, what a status code means, the URL policy."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from controlroom.domain.webhooks.rules import (
    DEFAULT_SCHEDULE_S,
    DeliveryPolicy,
    Outcome,
    outcome_of,
    parse_schedule,
)
from controlroom.domain.webhooks.url_policy import (
    Allowlist,
    CallbackRefusedError,
    check_addresses,
    parse_target,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_default_schedule_is_standard_webhooks_up_to_24_hours() -> None:
    policy = DeliveryPolicy(jitter=0)
    delays = [policy.delay(n, 0.0) for n in range(len(DEFAULT_SCHEDULE_S) + 1)]
    assert delays == [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400, None]
    assert policy.next_attempt_at(1, NOW, 0.0) == NOW + timedelta(seconds=5)
    assert policy.next_attempt_at(10, NOW, 0.0) is None


@pytest.mark.parametrize("spread", [-1.0, -0.3, 0.0, 0.5, 1.0])
def test_jitter_stays_within_ten_percent(spread: float) -> None:
    delay = DeliveryPolicy().delay(2, spread)
    assert delay is not None and 270 <= delay <= 330


def test_a_configured_schedule_is_parsed_and_checked() -> None:
    assert parse_schedule("0, 1.5,60") == (0.0, 1.5, 60.0)
    for bad in ("", "1,-2", "soon"):
        with pytest.raises(ValueError):
            parse_schedule(bad)


@pytest.mark.parametrize(("code", "outcome"), [
    (200, Outcome.DELIVERED), (204, Outcome.DELIVERED), (None, Outcome.RETRY), (429, Outcome.RETRY),
    (408, Outcome.RETRY), (500, Outcome.RETRY), (503, Outcome.RETRY), (410, Outcome.GONE),
    (400, Outcome.FAILED), (404, Outcome.FAILED), (301, Outcome.FAILED),
])
def test_what_a_response_means(code: int | None, outcome: Outcome) -> None:
    assert outcome_of(code) == outcome


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1",
                                     "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fe80::1",
                                     "fd00:ec2::254", "::ffff:10.0.0.1", "224.0.0.1"])
def test_addresses_inside_the_network_are_refused(address: str) -> None:
    with pytest.raises(CallbackRefusedError):
        check_addresses("h", [ipaddress.ip_address(address)], Allowlist())


def test_public_addresses_pass_and_one_bad_address_among_many_refuses() -> None:
    public = ipaddress.ip_address("93.184.215.14")
    check_addresses("example.com", [public], Allowlist())
    with pytest.raises(CallbackRefusedError, match=r"example\.com resolves to 10\.0\.0\.1"):
        check_addresses("example.com", [public, ipaddress.ip_address("10.0.0.1")], Allowlist())


def test_the_allowlist_names_hosts_suffixes_and_networks() -> None:
    allow = Allowlist.parse("hooks.internal, .corp.example 10.0.0.0/8,[::1]")
    loop = ipaddress.ip_address("127.0.0.1")
    check_addresses("hooks.internal", [loop], allow)
    check_addresses("ci.corp.example", [loop], allow)
    check_addresses("x", [ipaddress.ip_address("10.9.9.9"), ipaddress.ip_address("::1")], allow)
    with pytest.raises(CallbackRefusedError):
        check_addresses("x", [loop], allow)


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "http://", "example.com",
                                 "http://[::1", "http://ex ample.com/\n"])
def test_only_http_urls_with_a_host_are_targets(url: str) -> None:
    with pytest.raises(CallbackRefusedError):
        parse_target(url)


def test_a_target_has_its_default_port() -> None:
    assert parse_target("HTTPS://Example.COM/x").port == 443
    assert parse_target("http://example.com:8080/x").host == "example.com"
