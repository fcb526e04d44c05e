"""Token signing keys from a JWKS URL: fetched rarely, kept in memory, never per request.

The set is fetched on first use and again when it is older than `lifespan_s`, or when a
token names a kid the set doesn't hold, but no sooner than `cooldown_s` after the previous
attempt: a stream of tokens with made-up kids costs at most one fetch per cooldown. When
the URL can't be reached, the last good set keeps serving.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from jwt import PyJWK, PyJWKClient
from jwt.exceptions import PyJWKClientError, PyJWKSetError

log = logging.getLogger("controlroom.jwks")

DEFAULT_LIFESPAN_S = 300.0
DEFAULT_COOLDOWN_S = 10.0
FETCH_TIMEOUT_S = 5.0


class JwksKeys:
    """The SigningKeysPort over a JWKS URL (pyjwt's PyJWKClient does the fetching and parsing)."""

    def __init__(self, url: str, *, lifespan_s: float = DEFAULT_LIFESPAN_S,
                 cooldown_s: float = DEFAULT_COOLDOWN_S, timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self._client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout_s)
        self._lifespan_s = lifespan_s
        self._cooldown_s = cooldown_s
        self._keys: dict[str, PyJWK] | None = None
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._lock = threading.Lock()

    def cached(self, kid: str) -> PyJWK | None:
        """The key `kid` from a set that is still fresh; None means: ask `fetch` (no I/O here)."""
        keys = self._keys
        if keys is None or time.monotonic() - self._fetched_at >= self._lifespan_s:
            return None
        return keys.get(kid)

    def fetch(self, kid: str) -> PyJWK | None:
        """The key `kid`, fetching the set if due (blocking); ConnectionError if there is no set."""
        with self._lock:  # concurrent misses share one fetch
            now = time.monotonic()
            keys = self._keys
            fresh = now - self._fetched_at < self._lifespan_s
            if keys is not None and kid in keys and fresh:
                return keys[kid]
            if now - self._attempted_at >= self._cooldown_s:
                self._attempted_at = now
                keys = self._refresh(now) or keys
            if keys is None:
                raise ConnectionError("the JWKS could not be fetched")
            return keys.get(kid)

    def _refresh(self, now: float) -> dict[str, PyJWK] | None:
        try:
            jwk_set = self._client.get_jwk_set(refresh=True)
        except (PyJWKClientError, PyJWKSetError) as e:
            log.warning("JWKS fetch failed (%s); %s", type(e).__name__,
                        "keeping the previous keys" if self._keys else "no keys yet")
            return None
        self._keys = {k.key_id: k for k in jwk_set.keys
                      if k.key_id and getattr(k, "public_key_use", None) in (None, "sig")}
        self._fetched_at = now
        log.info("JWKS fetched: %d signing keys", len(self._keys))
        return self._keys
