"""Which callback URLs may be called: http(s) only, never an address inside the network.

Loopback, private, link-local (cloud metadata: 169.254.169.254), shared, reserved and
multicast addresses are refused unless the operator's allowlist names the host or a network
holding the address. So is every IPv6 form that carries an IPv4 address a router or host
may unwrap (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64) when that address is inside,
and `localhost` names, with or without a trailing dot. Resolving names is the caller's
business (it is I/O).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048
SCHEMES = ("http", "https")
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "instance-data"})
"""Names of cloud metadata services, refused whatever they resolve to."""
NAT64_PREFIXES = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
"""RFC 6052 / RFC 8215: a translator turns these into IPv4 packets (to any IPv4 address)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class CallbackRefusedError(ValueError):
    """A URL Control Room will not call; the message says why."""


@dataclass(frozen=True)
class Allowlist:
    """Hosts (exact, or `.suffix`) and networks that may be called despite the guard."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, entries: str | Iterable[str]) -> Allowlist:
        """From `CONTROLROOM_CALLBACK_ALLOWLIST`: comma/space separated hosts, IPs and CIDRs."""
        items = entries.replace(",", " ").split() if isinstance(entries, str) else list(entries)
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for item in items:
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def permits_host(self, host: str) -> bool:
        """True if the operator allowed this host by name."""
        host = host.lower().rstrip(".")
        return host in self.hosts or any(h.startswith(".") and host.endswith(h) for h in self.hosts)

    def permits_address(self, address: IPAddress) -> bool:
        """True if the address lies in an allowed network."""
        return any(address in net for net in self.networks if net.version == address.version)


@dataclass(frozen=True)
class Target:
    """Where a checked URL points: scheme, host (no brackets) and port."""

    scheme: str
    host: str
    port: int


def parse_target(url: str) -> Target:
    """The URL's scheme, host and port; CallbackRefusedError if it isn't an http(s) URL with a host."""
    if len(url) > MAX_URL_CHARS or not url.isprintable():
        raise CallbackRefusedError(f"must be a printable URL of at most {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CallbackRefusedError("is not a valid URL") from None
    if parts.scheme.lower() not in SCHEMES:
        raise CallbackRefusedError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise CallbackRefusedError("must name a host")
    scheme = parts.scheme.lower()
    return Target(scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80))


def literal_address(host: str) -> IPAddress | None:
    """The host as an IP address, if it is one."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _embedding_refusal(address: ipaddress.IPv6Address) -> str | None:
    """Why an IPv6 address that carries an IPv4 one is refused (None if it carries none inside)."""
    if any(address in prefix for prefix in NAT64_PREFIXES):
        return f"{address} is a NAT64 address (it reaches IPv4 through a translator)"
    low = int(address) & 0xFFFF_FFFF
    if int(address) >> 32 == 0 and low > 1:  # ::a.b.c.d, deprecated; not :: nor ::1
        return f"{address} is an IPv4-compatible address (::{ipaddress.IPv4Address(low)})"
    carried = [address.sixtofour, *(address.teredo or ())]
    for inner in (v4 for v4 in carried if v4 is not None):
        if (reason := address_refusal(inner)) is not None:
            return f"{address} carries {inner}: {reason}"
    return None


def address_refusal(address: IPAddress) -> str | None:
    """Why an address is inside the network (None if it is a public unicast address)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_refusal(address.ipv4_mapped)
        if (reason := _embedding_refusal(address)) is not None:
            return reason
    for label, inside in (
        ("loopback", address.is_loopback), ("link-local (cloud metadata)", address.is_link_local),
        ("private", address.is_private), ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified), ("reserved", address.is_reserved),
    ):
        if inside:
            return f"{address} is a {label} address"
    if not address.is_global:  # shared address space (100.64/10) and the like
        return f"{address} is not a public address"
    return None


def check_name(host: str, allowlist: Allowlist) -> None:
    """Refuse a name that is inside the network by definition, before (and however) it resolves."""
    if allowlist.permits_host(host):
        return
    name = host.lower().rstrip(".")  # `localhost.` is `localhost`: a trailing dot changes nothing
    if name in METADATA_HOSTS:
        raise CallbackRefusedError(f"{host} is a cloud metadata service")
    loopback = ipaddress.IPv4Address("127.0.0.1")
    if (name == "localhost" or name.endswith(".localhost")) and not allowlist.permits_address(loopback):
        raise CallbackRefusedError(  # RFC 6761: always loopback, whatever a resolver says
            f"{host} is a loopback name (see CONTROLROOM_CALLBACK_ALLOWLIST)")


def check_addresses(host: str, addresses: Iterable[IPAddress], allowlist: Allowlist) -> None:
    """Refuse if the name, or any address the host resolves to, is inside and not allowlisted.

    Every address counts, not only the first: a resolver may hand out any of them.
    """
    if allowlist.permits_host(host):
        return
    check_name(host, allowlist)
    for address in addresses:
        reason = address_refusal(address)
        if reason and not allowlist.permits_address(address):
            shown = "" if literal_address(host) else f"{host} resolves to "
            raise CallbackRefusedError(f"{shown}{reason} (see CONTROLROOM_CALLBACK_ALLOWLIST)")
