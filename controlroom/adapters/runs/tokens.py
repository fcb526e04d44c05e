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

from controlroom.domain.token_claims import HS256, TokenClaims

ALGORITHM = HS256
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
        claims = TokenClaims.minted(sub=f"run:{run_id}", tenant_id=tenant_id, scopes=RUN_SCOPES,
                                    now=int(self._clock()), ttl_s=ttl_s, run_id=run_id,
                                    attempt=attempt)
        return jwt.encode(claims.payload(audience=self._audience, issuer=self._issuer),
                          self._secret, algorithm=ALGORITHM)
