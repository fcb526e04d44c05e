"""Control Room over HTTP: submit a job, and follow a run's events across dropped connections.

Errors (all ClientError):
    ClientError
    ├── ApiError          the API refused the request (4xx): no retry can help
    └── UnreachableError  no answer (connection refused, 5xx, 429) for longer than we wait
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import httpx
import msgspec

from controlroom.client.sse import Message, messages

API = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8000"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
"""Longer than the server's heartbeat (15 s): silence this long means the connection is dead."""
GIVE_UP_AFTER_S = 300.0
"""How long to keep reconnecting while the server is unreachable."""
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
RETRYABLE = {429, 500, 502, 503, 504}


class ClientError(Exception):
    """Something stopped the client from doing what it was asked."""


class ApiError(ClientError):
    """The API refused the request."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


class UnreachableError(ClientError):
    """The API did not answer for too long."""


def _detail(resp: httpx.Response) -> str:
    try:
        body = msgspec.json.decode(resp.read())
    except msgspec.DecodeError:
        return resp.text[:500]
    return str(body.get("detail") or body) if isinstance(body, dict) else str(body)


class Retrying:
    """Back-off between attempts, and the point where waiting any longer is pointless."""

    def __init__(self, give_up_after_s: float = GIVE_UP_AFTER_S) -> None:
        self.give_up_after_s = give_up_after_s
        self.failures = 0
        self.since: float | None = None

    async def failed(self, why: str) -> None:
        """Wait before the next attempt, or raise UnreachableError."""
        now = time.monotonic()
        self.since = self.since or now
        if now - self.since > self.give_up_after_s:
            raise UnreachableError(f"no answer for {now - self.since:.0f}s: {why}")
        await asyncio.sleep(BACKOFF_S[min(self.failures, len(BACKOFF_S) - 1)])
        self.failures += 1

    def succeeded(self) -> None:
        """Start counting afresh."""
        self.failures, self.since = 0, None


class ControlRoomClient:
    """One keep-alive HTTP client for the API."""

    def __init__(self, url: str, token: str, *, give_up_after_s: float = GIVE_UP_AFTER_S,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.http = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S), transport=transport)
        self.give_up_after_s = give_up_after_s

    async def close(self) -> None:
        """Close the connections."""
        await self.http.aclose()

    async def submit(self, body: bytes, idempotency_key: str) -> dict[str, Any]:
        """POST a job; retried on network errors and 5xx (the key makes retries safe)."""
        retry = Retrying(self.give_up_after_s)
        headers = {"Idempotency-Key": idempotency_key, "Content-Type": "application/json"}
        while True:
            try:
                resp = await self.http.post(f"{API}/jobs/run", content=body, headers=headers)
            except httpx.TransportError as e:
                await retry.failed(f"{type(e).__name__}: {e}")
                continue
            if resp.status_code in RETRYABLE:
                await retry.failed(f"HTTP {resp.status_code}")
                continue
            if resp.status_code != 202:
                raise ApiError(resp.status_code, _detail(resp))
            result: dict[str, Any] = resp.json()
            return result

    async def run_events(
        self, run_id: str, *, after: int = 0,
        on_reconnect: Callable[[str], None] = lambda _why: None,
    ) -> AsyncGenerator[Message, None]:
        """The run's events after `after`, through reconnections, up to and including `end`."""
        last = str(after)
        retry = Retrying(self.give_up_after_s)
        while True:
            why = "the server closed the stream"
            try:
                async with contextlib.aclosing(self._stream(run_id, last, retry)) as stream:
                    async for message in stream:
                        if message.event == "resume":  # we fell behind: go on from our last id
                            last = str(msgspec.json.decode(message.data).get("last_event_id")
                                       or last)
                            why = "the server asked to resume"
                            break
                        last = message.id or last
                        yield message
                        if message.event == "end":
                            return
            except httpx.TransportError as e:
                why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            on_reconnect(why)
            if why != "the server asked to resume":
                await retry.failed(why)

    async def _stream(self, run_id: str, last: str, retry: Retrying) -> AsyncGenerator[Message, None]:
        headers = {"Accept": "text/event-stream", "Last-Event-ID": last}
        async with self.http.stream("GET", f"{API}/runs/{run_id}/events", headers=headers) as resp:
            if resp.status_code in RETRYABLE:
                raise httpx.RemoteProtocolError(f"HTTP {resp.status_code}")
            if resp.status_code != 200:
                await resp.aread()
                raise ApiError(resp.status_code, _detail(resp))
            retry.succeeded()
            async for message in messages(resp.aiter_lines()):
                yield message
