"""Sends one webhook: Standard Webhooks headers and signatures, one shared httpx client.

Redirects are never followed (a 3xx is a failed attempt): a redirect can't lead the request to
an address the guard would refuse. The response body is never read. The timeout bounds the
whole attempt (connect + send + the answer's headers), not each of them on its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import httpcore
import httpx
from standardwebhooks.webhooks import Webhook

from controlroom.adapters.webhooks.send_deadline import within
from controlroom.adapters.webhooks.ssrf import CallbackGuard, GuardedBackend
from controlroom.commands.webhooks.deliveries import Attempted
from controlroom.domain.webhooks.url_policy import CallbackRefusedError, parse_target

DEFAULT_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 64
KEEPALIVE_EXPIRY_S = 30.0
MAX_ERROR_CHARS = 300
USER_AGENT = "ControlRoom-Webhooks/1"


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool whose every connection passes the guard."""

    def __init__(self, guard: CallbackGuard) -> None:
        super().__init__(trust_env=False, retries=0)
        # httpx has no public hook for the network backend; the pool is what it sends through.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_CONNECTIONS, keepalive_expiry=KEEPALIVE_EXPIRY_S,
            network_backend=GuardedBackend(guard),
        )


class HttpWebhookSender:
    """POSTs signed webhook bodies; thread-safe, one client (and pool) per process."""

    def __init__(self, guard: CallbackGuard, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._client = httpx.Client(
            transport=GuardedTransport(guard), follow_redirects=False, trust_env=False,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S)),
        )

    def send(self, url: str, webhook_id: str, body: bytes, secrets: Sequence[str]) -> Attempted:
        """One attempt; never raises for what the receiver or the network does."""
        now = datetime.now(UTC)
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   "webhook-id": webhook_id, "webhook-timestamp": str(int(now.timestamp()))}
        if secrets:  # during a rotation's grace period: one signature per valid secret
            text = body.decode()
            headers["webhook-signature"] = " ".join(
                Webhook(s).sign(webhook_id, now, text) for s in secrets)
        started, started_at = time.perf_counter(), datetime.now(UTC)

        def attempted(code: int | None, error: str | None = None, refused: bool = False) -> Attempted:
            return Attempted(code, _ms(started), error[:MAX_ERROR_CHARS] if error else None,
                             refused, started_at, datetime.now(UTC))

        try:
            parse_target(url)
            with within(self.timeout_s), self._client.stream(
                    "POST", url, content=body, headers=headers) as response:
                code = response.status_code
        except CallbackRefusedError as e:
            return attempted(None, f"refused: {e}", refused=True)
        except httpx.TimeoutException:
            return attempted(None, f"timed out after {self.timeout_s:g} s")
        except (httpx.HTTPError, OSError) as e:
            return attempted(None, f"{type(e).__name__}: {e}")
        if 300 <= code < 400:
            return attempted(code, "redirects are not followed "
                             f"(Location: {response.headers.get('location', '')})")
        return attempted(code)

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
