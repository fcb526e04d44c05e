"""API keys as bearer tokens: looked up by hash, cached briefly, refused once expired or revoked."""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from litestar.exceptions import NotAuthorizedException

from controlroom.api.auth import Principal
from controlroom.commands.api_keys import ApiKeyCommands
from controlroom.domain.api_keys import key_hash

CACHE_TTL_S = 5.0
"""How long a good key is trusted without asking the database: the bound on revocation
taking effect in a process other than the one that revoked it."""
CACHE_SIZE = 10_000
KEY_PATTERN = re.compile(r"^cr_[A-Za-z0-9_-]{43,256}$")
SUBJECT_PREFIX = "api-key:"


class ApiKeyReadsPort(Protocol):
    """Reads of the api_keys read model (live keys only; never a key, never a hash out)."""

    async def list(self, tenant_id: str) -> list[Any]: ...

    async def by_hash(self, key_hash: str) -> Any | None: ...


class ApiKeyVerifier:
    """Turns a `cr_…` key into the principal of its tenant, or a 401."""

    def __init__(self, keys: ApiKeyReadsPort, *, cache_ttl_s: float = CACHE_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    async def verify(self, key: str) -> Principal:
        """The key's principal; NotAuthorizedException if it is malformed, unknown, revoked or expired."""
        if not KEY_PATTERN.match(key):
            raise NotAuthorizedException("invalid API key: not of the form cr_<random>")
        digest = key_hash(key)
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return self._unexpired(hit[1], now)
        row = await self._keys.by_hash(digest)
        if row is None:
            self._cache.pop(digest, None)
            raise NotAuthorizedException("invalid API key: unknown or revoked")
        expires = row["expires_at"]
        principal = Principal(
            sub=f"{SUBJECT_PREFIX}{row['id']}", tenant_id=row["tenant_id"],
            scopes=frozenset(row["scopes"]), expires_at=expires.timestamp() if expires else math.inf,
        )
        self._cache[digest] = (now + self._ttl, principal)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return self._unexpired(principal, now)

    def forget(self, key_id: UUID) -> None:
        """Drop a revoked key from this process's cache at once."""
        sub = f"{SUBJECT_PREFIX}{key_id}"
        for digest, (_, principal) in list(self._cache.items()):
            if principal.sub == sub:
                self._cache.pop(digest, None)

    @staticmethod
    def _unexpired(principal: Principal, now: float) -> Principal:
        if principal.expires_at <= now:
            raise NotAuthorizedException("API key expired")
        return principal


@dataclass
class ApiKeyDeps:
    """What the API key routes and authentication need from the composition root."""

    commands: ApiKeyCommands
    reads: ApiKeyReadsPort
    verifier: ApiKeyVerifier
