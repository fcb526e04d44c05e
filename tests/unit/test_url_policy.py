"""The URL policy over every way an IPv6 address can carry an IPv4 one, and over host names."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlroom.domain.webhooks.url_policy import (
    Allowlist,
    CallbackRefusedError,
    address_refusal,
    check_addresses,
)

INSIDE_V4 = [ipaddress.IPv4Network(n) for n in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
    "100.64.0.0/10", "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4",
)]
PUBLIC_V4 = [ipaddress.IPv4Network(n) for n in ("8.8.8.0/24", "93.184.215.0/24", "1.1.1.0/24")]


def in_networks(networks: list[ipaddress.IPv4Network]) -> st.SearchStrategy[IPv4Address]:
    return st.sampled_from(networks).flatmap(lambda net: st.integers(0, net.num_addresses - 1).map(
        lambda i: net.network_address + i))


def mapped(v4: IPv4Address) -> IPv6Address:
    return IPv6Address((0xFFFF << 32) | int(v4))


def compatible(v4: IPv4Address) -> IPv6Address:
    return IPv6Address(int(v4))


def sixtofour(v4: IPv4Address, tail: int = 0) -> IPv6Address:
    return IPv6Address((0x2002 << 112) | (int(v4) << 80) | tail)


def nat64(v4: IPv4Address) -> IPv6Address:
    return IPv6Address(int(IPv6Address("64:ff9b::")) | int(v4))


def nat64_local(v4: IPv4Address) -> IPv6Address:
    return IPv6Address(int(IPv6Address("64:ff9b:1::")) | int(v4))


TEREDO_SERVER = IPv4Address("65.54.227.120")


def teredo_client(v4: IPv4Address) -> IPv6Address:
    """RFC 4380: server in bits 32-63, the client's address inverted in the last 32 bits."""
    return IPv6Address((0x20010000 << 96) | (int(TEREDO_SERVER) << 64) | (int(v4) ^ 0xFFFFFFFF))


def teredo_server(v4: IPv4Address) -> IPv6Address:
    return IPv6Address((0x20010000 << 96) | (int(v4) << 64) | (int(IPv4Address("8.8.8.8")) ^ 0xFFFFFFFF))


FORMS = [mapped, compatible, sixtofour, nat64, nat64_local, teredo_client, teredo_server]


@given(inner=in_networks(INSIDE_V4), form=st.sampled_from(FORMS), tail=st.integers(0, 2**16 - 1))
def test_every_ipv6_form_of_an_inside_ipv4_address_is_refused(
        inner: IPv4Address, form: object, tail: int) -> None:
    address = form(inner)  # type: ignore[operator]
    assert address_refusal(inner) is not None
    assert address_refusal(address) is not None, address
    if form is sixtofour:  # any host part behind the 6to4 prefix
        assert address_refusal(sixtofour(inner, tail)) is not None


@given(public=in_networks(PUBLIC_V4))
def test_a_public_ipv4_address_stays_callable_as_itself_mapped_and_through_6to4(
        public: IPv4Address) -> None:
    assert address_refusal(public) is None
    assert address_refusal(mapped(public)) is None
    assert address_refusal(sixtofour(public, 1)) is None


@given(inner=in_networks(PUBLIC_V4))
def test_nat64_and_ipv4_compatible_forms_are_refused_whatever_they_carry(inner: IPv4Address) -> None:
    for form in (nat64, nat64_local, compatible):
        assert address_refusal(form(inner)) is not None


@pytest.mark.parametrize("literal", ["2002:7f00:1::", "2002:a9fe:a9fe::", "2002:c0a8:101::"])
def test_the_reported_6to4_addresses_are_refused(literal: str) -> None:
    reason = address_refusal(ipaddress.ip_address(literal))
    assert reason is not None and "carries" in reason


@pytest.mark.parametrize("host", ["localhost", "localhost.", "LOCALHOST..", "a.localhost.",
                                  "metadata.google.internal.", "Metadata.Google.Internal"])
def test_local_and_metadata_names_are_refused_with_or_without_a_trailing_dot(host: str) -> None:
    with pytest.raises(CallbackRefusedError):
        check_addresses(host, [], Allowlist())  # even when the name doesn't resolve now


def test_the_allowlist_still_permits_a_named_local_host() -> None:
    check_addresses("localhost.", [IPv4Address("127.0.0.1")], Allowlist.parse("localhost"))
