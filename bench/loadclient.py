"""The benchmark's HTTP clients: one keep-alive connection per client slot, httpx or aiohttp.

Both answer `get(path)` / `post(path, body)` with (status, headers, body) and raise one of their
`errors` when the request itself fails. aiohttp costs the load generator much less CPU per
request than httpx, which matters when it shares the host's cores with the server it measures.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import httpx

try:
    import aiohttp
    import yarl
except ImportError:  # httpx alone is enough
    aiohttp = None  # type: ignore[assignment]

CLIENTS = ("aiohttp", "httpx")
DEFAULT_CLIENT = "aiohttp" if aiohttp is not None else "httpx"
TIMEOUT_S = 30.0

Reply = tuple[int, Mapping[str, str], bytes]


class SlotClient(Protocol):
    errors: tuple[type[BaseException], ...]

    async def get(self, path: str) -> Reply: ...

    async def post(self, path: str, body: bytes) -> Reply: ...


class _Httpx:
    errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def get(self, path: str) -> Reply:
        r = await self._client.get(path)
        return r.status_code, r.headers, r.content

    async def post(self, path: str, body: bytes) -> Reply:
        r = await self._client.post(path, content=body)
        return r.status_code, r.headers, r.content


class _Aiohttp:
    errors: tuple[type[BaseException], ...] = (
        (aiohttp.ClientError, TimeoutError) if aiohttp is not None else ())

    def __init__(self, session: Any, base: str) -> None:
        self._session = session
        self._base = base
        # Parsed once per path: yarl parsing a URL string is a visible share of a request's cost.
        self._urls: dict[str, Any] = {}

    def _url(self, path: str) -> Any:
        u = self._urls.get(path)
        if u is None:
            u = self._urls[path] = yarl.URL(self._base + path, encoded=True)
        return u

    async def get(self, path: str) -> Reply:
        async with self._session.get(self._url(path)) as r:
            return r.status, r.headers, await r.read()

    async def post(self, path: str, body: bytes) -> Reply:
        async with self._session.post(self._url(path), data=body) as r:
            return r.status, r.headers, await r.read()


@contextlib.asynccontextmanager
async def slot_client(kind: str, url: str, headers: dict[str, str]) -> AsyncIterator[SlotClient]:
    """One client with a single keep-alive connection (`kind`: one of CLIENTS)."""
    if kind == "httpx":
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                     timeout=TIMEOUT_S) as client:
            yield _Httpx(client)
    elif kind == "aiohttp":
        if aiohttp is None:
            raise RuntimeError("aiohttp is not installed: use --client httpx")
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(headers=headers, connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
            yield _Aiohttp(session, url.rstrip("/"))
    else:
        raise ValueError(f"unknown client {kind!r}; choose from {', '.join(CLIENTS)}")


def describe(kind: str) -> str:
    """The client and its version, for the report's header."""
    if kind == "aiohttp" and aiohttp is not None:
        return f"aiohttp {aiohttp.__version__} ClientSession, TCPConnector(limit=1)"
    return f"httpx {httpx.__version__} AsyncClient, max_connections=1"
