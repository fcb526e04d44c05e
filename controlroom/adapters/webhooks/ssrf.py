"""The SSRF guard: resolves a callback's host and refuses addresses inside the network.

Checked twice: when a URL is accepted (submit, subscription) and again on every connection a
delivery opens — inside the HTTP client's network backend, which then connects to exactly the
address it checked, so a name re-resolving to 127.0.0.1 (DNS rebinding) can't slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore

from controlroom.adapters.webhooks.send_deadline import DeadlineStream, left
from controlroom.domain.webhooks.url_policy import (
    Allowlist,
    CallbackRefusedError,
    IPAddress,
    check_addresses,
    check_name,
    literal_address,
    parse_target,
)

RESOLVE_TIMEOUT_S = 2.0
"""A submit never waits longer on DNS; an unresolvable host is left to delivery's re-check."""


class CallbackGuard:
    """Applies the URL policy with this machine's resolver and the operator's allowlist."""

    def __init__(self, allowlist: Allowlist | str | Iterable[str] = ()) -> None:
        self.allowlist = allowlist if isinstance(allowlist, Allowlist) else Allowlist.parse(allowlist)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address `host` resolves to (an IP literal is itself); OSError if none."""
        literal = literal_address(host)
        if literal is not None:
            return [literal]
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0])
                                  for info in infos))

    def address_for(self, host: str, port: int) -> str:
        """The checked address to connect to; CallbackRefusedError if any is forbidden."""
        check_name(host, self.allowlist)  # first: `localhost.` is refused even if it won't resolve
        addresses = self.resolve(host, port)
        check_addresses(host, addresses, self.allowlist)
        return str(addresses[0])

    def check(self, url: str) -> None:
        """Refuse a URL that isn't http(s) or whose host is (or resolves) inside the network.

        A host that doesn't resolve now is accepted: delivery re-checks it on every attempt.
        """
        target = parse_target(url)
        try:
            addresses = self.resolve(target.host, target.port)
        except OSError:
            addresses = []
        check_addresses(target.host, addresses, self.allowlist)

    async def refusal(self, url: str) -> str | None:
        """Why `url` is refused (None if accepted), resolving off the event loop."""
        try:
            await asyncio.wait_for(asyncio.to_thread(self.check, url), RESOLVE_TIMEOUT_S)
        except CallbackRefusedError as e:
            return str(e)
        except TimeoutError:
            return None  # slow DNS: delivery re-checks
        return None


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses the guard accepts; its streams
    keep the calling thread's total deadline (send_deadline.py)."""

    def __init__(self, guard: CallbackGuard) -> None:
        self.guard = guard

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> Any:
        """Resolve and check `host`, then connect to the checked address (TLS still uses `host`)."""
        try:
            address = self.guard.address_for(host, port)
        except OSError as e:
            raise httpcore.ConnectError(f"could not resolve {host}: {e}") from None
        # Within a delivery's total deadline (send_deadline.within), if one is set.
        timeout = left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(
            super().connect_tcp(address, port, timeout, local_address, socket_options))
