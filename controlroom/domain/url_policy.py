"""Which callback URLs may be called: http(s) only, never an address inside the network.

Loopback, private, link-local (cloud metadata: 169.254.169.254), shared, reserved and
multicast addresses are refused unless the operator's allowlist names the host or a network
holding the address. Resolving names is the caller's business (it is I/O).
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


def address_refusal(address: IPAddress) -> str | None:
    """Why an address is inside the network (None if it is a public unicast address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address_refusal(address.ipv4_mapped)
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


def check_addresses(host: str, addresses: Iterable[IPAddress], allowlist: Allowlist) -> None:
    """Refuse if any address the host resolves to is inside the network and not allowlisted.

    Every address counts, not only the first: a resolver may hand out any of them.
    """
    if allowlist.permits_host(host):
        return
    if host.rstrip(".") in METADATA_HOSTS:
        raise CallbackRefusedError(f"{host} is a cloud metadata service")
    for address in addresses:
        reason = address_refusal(address)
        if reason and not allowlist.permits_address(address):
            shown = "" if literal_address(host) else f"{host} resolves to "
            raise CallbackRefusedError(f"{shown}{reason} (see CONTROLROOM_CALLBACK_ALLOWLIST)")
