"""Bearer-token authentication (JWTs with pinned algorithms, API keys) and per-route scope guards.

HS256 tokens are checked with the server's secret; with a JWKS configured, RS256 and ES256
tokens are checked with the key their `kid` names. The header's `alg` only picks which of
those pinned paths applies: `none`, other algorithms and a key of another type are a 401.
`cr_…` bearers are API keys, looked up by hash (api/api_keys/auth.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol
from uuid import UUID

import jwt
import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import Guard

from controlroom.api.problems import ProblemError
from controlroom.commands.errors import RunNotFoundError
from controlroom.domain.api_keys import PREFIX as API_KEY_PREFIX
from controlroom.domain.scopes import ALL_SCOPES as _ALL_SCOPES
from controlroom.domain.scopes import DEFAULT_SCOPES as _DEFAULT_SCOPES
from controlroom.domain.token_claims import HS256, REQUIRED, InvalidClaimError, TokenClaims

ALGORITHM = HS256
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
"""Accepted only with a key from the JWKS, whose own type must match."""
ALL_SCOPES = list(_ALL_SCOPES)
DEFAULT_SCOPES = " ".join(_DEFAULT_SCOPES)
CACHE_SIZE = 10_000
CLOCK_SKEW_S = 5
MAX_KID_CHARS = 200
DEFAULT_MAX_LIFETIME_S = 24 * 3600
"""A user token may live this long at most (from `iat`, else from now); run tokens are exempt."""


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: subject, tenant and granted scopes."""

    sub: str
    tenant_id: str
    scopes: frozenset[str]
    expires_at: float
    run_id: UUID | None = None
    """Set for a run token: the one run it may act on (DESIGN.md §7)."""
    attempt: int | None = None


class SigningKeysPort(Protocol):
    """The JWKS: public keys by `kid` (PyJWK objects).

    `cached` never does I/O; `fetch` may block on the JWKS URL (never on the event loop),
    returns None for a kid the set doesn't have, and raises ConnectionError if the set
    can't be had at all.
    """

    def cached(self, kid: str) -> Any | None: ...

    def fetch(self, kid: str) -> Any | None: ...


class TokenVerifier:
    """Verifies JWTs; caches good ones until they expire (verification dominates a GET)."""

    def __init__(self, secret: str, *, audience: str | None = None, issuer: str | None = None,
                 jwks: SigningKeysPort | None = None, max_lifetime_s: float = DEFAULT_MAX_LIFETIME_S):
        self._secret = secret
        self._audience = audience
        self._issuer = issuer
        self._jwks = jwks
        self._max_lifetime_s = max_lifetime_s
        self._cache: OrderedDict[str, Principal] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        """The token's principal; NotAuthorizedException if it isn't valid now.

        A JWKS fetch (an unknown or stale kid) happens in a thread, off the event loop.
        """
        cached = self._cached(token)
        if cached is not None:
            return cached
        alg, kid = self._header(token)
        jwk = None
        if alg in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            jwk = self._jwks.cached(kid) or await asyncio.to_thread(self._fetch, kid)
        return self._decode(token, alg, jwk)

    def _cached(self, token: str) -> Principal | None:
        cached = self._cache.get(token)
        return cached if cached is not None and cached.expires_at > time.time() else None

    def _header(self, token: str) -> tuple[str, str]:
        """The token's (alg, kid), unverified: they only choose among the pinned paths."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise NotAuthorizedException(f"invalid token: {e}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg == ALGORITHM:
            return alg, ""
        if alg not in ASYMMETRIC_ALGORITHMS or self._jwks is None:
            accepted = [ALGORITHM, *(ASYMMETRIC_ALGORITHMS if self._jwks else ())]
            raise NotAuthorizedException(
                f"invalid token: algorithm {str(alg)[:20]!r} is not accepted (only {', '.join(accepted)})")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
            raise NotAuthorizedException("invalid token: an RS256/ES256 token needs a kid header")
        return alg, kid

    def _fetch(self, kid: str) -> Any:
        assert self._jwks is not None
        try:
            jwk = self._jwks.fetch(kid)
        except ConnectionError:
            raise ProblemError(503, "Service unavailable",
                               "the token signing keys (JWKS) could not be fetched; retry shortly",
                               headers={"Retry-After": "5"}) from None
        if jwk is None:
            raise NotAuthorizedException(f"invalid token: unknown signing key {kid!r}")
        return jwk

    def _decode(self, token: str, alg: str, jwk: Any | None) -> Principal:
        if jwk is not None and getattr(jwk, "algorithm_name", None) != alg:
            raise NotAuthorizedException(f"invalid token: {alg} does not match the type of its key")
        try:
            claims = jwt.decode(
                token,
                self._secret if jwk is None else jwk.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=CLOCK_SKEW_S,
                options={"require": list(REQUIRED), "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthorizedException("token expired") from None
        except jwt.PyJWTError as e:
            raise NotAuthorizedException(f"invalid token: {e}") from None
        try:
            parsed = TokenClaims.parse(claims)
        except InvalidClaimError as e:
            raise NotAuthorizedException(f"invalid token: {e}") from None
        if parsed.run_id is None:  # a run token lives as long as its run may; the worker mints it
            self._check_lifetime(parsed)
        principal = Principal(
            sub=parsed.sub,
            tenant_id=parsed.tenant_id,
            scopes=frozenset(parsed.scopes),
            expires_at=parsed.expires_at,
            run_id=parsed.run_id,
            attempt=parsed.attempt,
        )
        self._cache[token] = principal
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal


    def _check_lifetime(self, claims: TokenClaims) -> None:
        """Refuse a user token that lives longer than the maximum (a leaked one must die soon)."""
        now = time.time()
        # an iat in the future buys no extra life
        start = min(now if claims.issued_at is None else claims.issued_at, now)
        if claims.expires_at - start > self._max_lifetime_s + CLOCK_SKEW_S:
            raise NotAuthorizedException(
                f"invalid token: it lives longer than the maximum of {self._max_lifetime_s:g} s "
                "(exp - iat; see CONTROLROOM_JWT_MAX_LIFETIME_S)")


def issue_token(
    secret: str, *, tenant: str, sub: str, scopes: Iterable[str], ttl_s: int,
    audience: str | None = None, issuer: str | None = None, extra: dict[str, object] | None = None,
) -> str:
    """A signed HS256 token for `sub` in `tenant`."""
    claims = TokenClaims.minted(sub=sub, tenant_id=tenant, scopes=scopes, now=int(time.time()),
                                ttl_s=ttl_s)
    return jwt.encode(claims.payload(audience=audience, issuer=issuer, extra=extra), secret,
                      algorithm=ALGORITHM)


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Reads `Authorization: Bearer …` and sets request.user to a Principal."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization")
        if not header:
            raise NotAuthorizedException("missing Authorization: Bearer token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException("Authorization header must be 'Bearer <token>'")
        principal = await authenticate(connection.app, token.strip())
        return AuthenticationResult(user=principal, auth=token)


async def authenticate(app: Any, token: str) -> Principal:
    """The principal of a bearer token: an API key (`cr_…`) or a JWT."""
    if token.startswith(API_KEY_PREFIX):
        deps = app.state.get("deps")
        keys = getattr(deps, "api_keys", None)
        if keys is None:
            raise NotAuthorizedException("API keys are not accepted by this server")
        principal: Principal = await keys.verifier.verify(token)
        return principal
    verifier: TokenVerifier = app.state.verifier
    return await verifier.verify(token)


def requires(scope: str, *, run_token: bool = False) -> Guard:
    """Guard: the caller's token must carry `scope` (or `admin`).

    A run token is confined to its run: another run's id is a 404 (as if it didn't exist),
    and routes that don't declare `run_token=True` are a 403 even for its own run.
    """

    # async: Litestar would run a sync guard in a thread pool on every request
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
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
