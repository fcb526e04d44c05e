"""The claims of a bearer token: their names, what a minted token says, and what a verified
one is taken to say. One vocabulary for the API that checks tokens, the worker that mints run
tokens and the `token` command; the signature itself is the JWT library's, elsewhere."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

SUB, TENANT_ID, SCOPE = "sub", "tenant_id", "scope"
RUN_ID, ATTEMPT = "run_id", "attempt"
"""A run token's: the one run (and attempt) it may act on."""
ISSUED_AT, EXPIRES, NOT_BEFORE = "iat", "exp", "nbf"
AUDIENCE, ISSUER = "aud", "iss"
TIME_CLAIMS = (EXPIRES, ISSUED_AT, NOT_BEFORE)
REQUIRED = (EXPIRES, SUB)
HS256 = "HS256"
"""What tokens signed with the server's own secret use (user tokens and run tokens alike)."""


class InvalidClaimError(ValueError):
    """A claim is missing or malformed: the whole token is invalid."""


@dataclass(frozen=True)
class TokenClaims:
    """Who a token speaks for, in which tenant, with which scopes, until when."""

    sub: str
    tenant_id: str
    scopes: tuple[str, ...]
    expires_at: float
    issued_at: float | None = None
    run_id: UUID | None = None
    attempt: int | None = None

    @classmethod
    def minted(
        cls, *, sub: str, tenant_id: str, scopes: Iterable[str], now: int, ttl_s: int,
        run_id: UUID | None = None, attempt: int | None = None,
    ) -> TokenClaims:
        """The claims of a token issued `now` (whole seconds) for `ttl_s` seconds."""
        return cls(sub, tenant_id, tuple(scopes), now + ttl_s, now, run_id, attempt)

    def payload(
        self, *, audience: str | None = None, issuer: str | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> dict[str, object]:
        """The JWT payload; `extra` claims are kept as given."""
        claims: dict[str, object] = {SUB: self.sub, TENANT_ID: self.tenant_id,
                                     SCOPE: " ".join(self.scopes), EXPIRES: self.expires_at}
        if self.issued_at is not None:
            claims[ISSUED_AT] = self.issued_at
        if self.run_id is not None:
            claims[RUN_ID] = str(self.run_id)
        if self.attempt is not None:
            claims[ATTEMPT] = self.attempt
        claims.update(extra or {})
        if audience:
            claims[AUDIENCE] = audience
        if issuer:
            claims[ISSUER] = issuer
        return claims

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> TokenClaims:
        """What a verified token's payload says; InvalidClaimError naming the first bad claim."""
        for name in REQUIRED:
            if name not in payload:
                raise InvalidClaimError(f"missing {name} claim")
        _check_times(payload)
        tenant = payload.get(TENANT_ID)
        if not isinstance(tenant, str) or not tenant:
            raise InvalidClaimError(f"missing {TENANT_ID} claim")
        sub = payload[SUB]
        for name, value in ((SUB, sub), (TENANT_ID, tenant)):
            if not isinstance(value, str) or not value.strip():
                raise InvalidClaimError(f"{name} claim must be a non-blank string")
        if not (tenant.isprintable() and sub.isprintable()):
            raise InvalidClaimError(f"{SUB} and {TENANT_ID} must be printable")
        scope = payload.get(SCOPE, "")
        issued_at = payload.get(ISSUED_AT)
        run_id, attempt = _run_claims(payload)
        return cls(sub, tenant, tuple(scope.split() if isinstance(scope, str) else ()),
                   float(payload[EXPIRES]), None if issued_at is None else float(issued_at),
                   run_id, attempt)


def _check_times(payload: Mapping[str, Any]) -> None:
    """exp, iat and nbf are NumericDate (RFC 7519): finite numbers, never strings or booleans."""
    for name in TIME_CLAIMS:
        if name not in payload:
            continue
        value = payload[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidClaimError(f"{name} claim must be a number (seconds)")


def _run_claims(payload: Mapping[str, Any]) -> tuple[UUID | None, int | None]:
    """The run a run token is confined to (none for a user token)."""
    if RUN_ID not in payload:
        return None, None
    attempt = payload.get(ATTEMPT)
    try:
        run_id = UUID(str(payload[RUN_ID]))
    except ValueError:
        raise InvalidClaimError(f"{RUN_ID} claim is not a UUID") from None
    if attempt is not None and (not isinstance(attempt, int) or isinstance(attempt, bool)):
        raise InvalidClaimError(f"{ATTEMPT} claim is not an integer")
    return run_id, attempt
