"""Bearer-token authentication (JWT, HS256 pinned) and per-route scope guards."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import jwt
import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from controlroom.commands.errors import RunNotFoundError

ALGORITHM = "HS256"
ALL_SCOPES = [
    "jobs:write", "runs:read", "runs:write", "lineage:read", "lineage:write",
    "artifacts:read", "artifacts:write", "webhooks:write", "admin",
]
DEFAULT_SCOPES = "jobs:write runs:read runs:write artifacts:read"
CACHE_SIZE = 10_000
CLOCK_SKEW_S = 5


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: subject, tenant and granted scopes."""

    sub: str
    tenant_id: str
    scopes: frozenset[str]
    expires_at: float
    run_id: UUID | None = None
    """Set for a run token: the one run it may act on (DESIGN.md §7)."""
    attempt: int | None = None


class TokenVerifier:
    """Verifies JWTs; caches good ones until they expire (verification dominates a GET)."""

    def __init__(self, secret: str, *, audience: str | None = None, issuer: str | None = None):
        self._secret = secret
        self._audience = audience
        self._issuer = issuer
        self._cache: OrderedDict[str, Principal] = OrderedDict()

    def verify(self, token: str) -> Principal:
        """The token's principal; NotAuthorizedException if it isn't valid now."""
        cached = self._cache.get(token)
        if cached is not None and cached.expires_at > time.time():
            return cached
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=CLOCK_SKEW_S,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthorizedException("token expired") from None
        except jwt.PyJWTError as e:
            raise NotAuthorizedException(f"invalid token: {e}") from None
        tenant = claims.get("tenant_id")
        if not isinstance(tenant, str) or not tenant:
            raise NotAuthorizedException("invalid token: missing tenant_id claim")
        if not (tenant.isprintable() and str(claims["sub"]).isprintable()):
            raise NotAuthorizedException("invalid token: sub and tenant_id must be printable")
        scope = claims.get("scope", "")
        principal = Principal(
            sub=str(claims["sub"]),
            tenant_id=tenant,
            scopes=frozenset(scope.split() if isinstance(scope, str) else ()),
            expires_at=float(claims["exp"]),
            **_run_claims(claims),
        )
        self._cache[token] = principal
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal


def _run_claims(claims: dict[str, Any]) -> dict[str, Any]:
    """The run a run token is confined to; a malformed claim makes the whole token invalid."""
    if "run_id" not in claims:
        return {}
    attempt = claims.get("attempt")
    try:
        run_id = UUID(str(claims["run_id"]))
    except ValueError:
        raise NotAuthorizedException("invalid token: run_id claim is not a UUID") from None
    if attempt is not None and (not isinstance(attempt, int) or isinstance(attempt, bool)):
        raise NotAuthorizedException("invalid token: attempt claim is not an integer")
    return {"run_id": run_id, "attempt": attempt}


def issue_token(
    secret: str, *, tenant: str, sub: str, scopes: Iterable[str], ttl_s: int,
    audience: str | None = None, issuer: str | None = None, extra: dict[str, object] | None = None,
) -> str:
    """A signed HS256 token for `sub` in `tenant`."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": sub, "tenant_id": tenant, "scope": " ".join(scopes), "iat": now, "exp": now + ttl_s,
        **(extra or {}),
    }
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Reads `Authorization: Bearer …` and sets request.user to a Principal."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        header = connection.headers.get("authorization")
        if not header:
            raise NotAuthorizedException("missing Authorization: Bearer token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException("Authorization header must be 'Bearer <token>'")
        verifier: TokenVerifier = connection.app.state.verifier
        principal = verifier.verify(token.strip())
        return AuthenticationResult(user=principal, auth=token)


def requires(scope: str, *, run_token: bool = False):
    """Guard: the caller's token must carry `scope` (or `admin`).

    A run token is confined to its run: another run's id is a 404 (as if it didn't exist),
    and routes that don't declare `run_token=True` are a 403 even for its own run.
    """

    # async: Litestar would run a sync guard in a thread pool on every request
    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        principal: Principal = connection.user
        if scope not in principal.scopes and "admin" not in principal.scopes:
            raise PermissionDeniedException(f"token lacks scope {scope!r}")
        if principal.run_id is not None:
            target = connection.path_params.get("run_id")
            if target is not None and str(target) != str(principal.run_id):
                raise RunNotFoundError(UUID(str(target)))
            if not run_token:
                raise PermissionDeniedException("a run token may only report on its own run")

    return guard
