"""Token claims: what is minted is what is read back, and a bad claim is named."""

from __future__ import annotations

import re
from typing import Any
from uuid import uuid4

import pytest

from controlroom.domain.token_claims import InvalidClaimError, TokenClaims


def test_a_minted_run_token_reads_back_as_minted() -> None:
    run_id = uuid4()
    minted = TokenClaims.minted(sub=f"run:{run_id}", tenant_id="acme", scopes=["runs:write"],
                                now=1000, ttl_s=60, run_id=run_id, attempt=2)
    payload = minted.payload(audience="controlroom", issuer="us")
    assert payload == {"sub": f"run:{run_id}", "tenant_id": "acme", "scope": "runs:write",
                       "iat": 1000, "exp": 1060, "run_id": str(run_id), "attempt": 2,
                       "aud": "controlroom", "iss": "us"}
    assert TokenClaims.parse(payload) == minted


def test_a_user_token_has_no_run_and_keeps_extra_claims() -> None:
    minted = TokenClaims.minted(sub="alice", tenant_id="acme", scopes=[], now=5, ttl_s=10)
    payload = minted.payload(extra={"team": "data"})
    assert payload["team"] == "data" and "run_id" not in payload and payload["scope"] == ""
    parsed = TokenClaims.parse(payload)
    assert (parsed.run_id, parsed.attempt, parsed.scopes) == (None, None, ())


@pytest.mark.parametrize(("change", "said"), [
    ({"exp": "soon"}, "exp claim must be a number (seconds)"),
    ({"iat": True}, "iat claim must be a number (seconds)"),
    ({"tenant_id": ""}, "missing tenant_id claim"),
    ({"sub": "  "}, "sub claim must be a non-blank string"),
    ({"tenant_id": "a\nb"}, "sub and tenant_id must be printable"),
    ({"run_id": "not-a-uuid"}, "run_id claim is not a UUID"),
    ({"run_id": str(uuid4()), "attempt": "1"}, "attempt claim is not an integer"),
])
def test_a_bad_claim_is_named(change: dict[str, Any], said: str) -> None:
    payload = {**TokenClaims.minted(sub="a", tenant_id="t", scopes=["runs:read"], now=0,
                                    ttl_s=1).payload(), **change}
    with pytest.raises(InvalidClaimError, match=f"^{re.escape(said)}$"):
        TokenClaims.parse(payload)
