"""Run-scoped tokens: short-lived HS256 JWTs that let a job report on its own run only.

Signed with the server's JWT secret, so the API's verifier accepts them like any token;
the `run_id` claim is what confines them (see `controlroom.api.auth`). Encoded here with
pyjwt directly: adapters don't import the API layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

import jwt

ALGORITHM = "HS256"
RUN_SCOPES = ("runs:write", "artifacts:write", "artifacts:read", "lineage:write")
"""`artifacts:read`: a job lists and reads its own run's artifacts (never another's)."""


class HmacRunTokens:
    """Mints run tokens with the server's HS256 secret."""

    def __init__(
        self, secret: str, *, audience: str | None = None, issuer: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._audience = audience
        self._issuer = issuer
        self._clock = clock

    def for_run(self, tenant_id: str, run_id: UUID, ttl_s: int, *, attempt: int | None = None) -> str:
        """A token for `run_id` (and only that attempt, if given) valid for `ttl_s` seconds."""
        now = int(self._clock())
        claims: dict[str, object] = {
            "sub": f"run:{run_id}", "tenant_id": tenant_id, "run_id": str(run_id),
            "scope": " ".join(RUN_SCOPES), "iat": now, "exp": now + ttl_s,
        }
        if attempt is not None:
            claims["attempt"] = attempt
        if self._audience:
            claims["aud"] = self._audience
        if self._issuer:
            claims["iss"] = self._issuer
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)
