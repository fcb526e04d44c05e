"""RS256 and ES256 tokens are verified with keys from a JWKS; the algorithms stay pinned.

The JWKS is served by a real local HTTP server (keys generated here with `cryptography`); the
API is the session's service built with `CONTROLROOM_JWKS_URL`, audience and issuer set.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from litestar.exceptions import NotAuthorizedException
from litestar.testing import TestClient

from controlroom.adapters.security.jwks import JwksKeys
from controlroom.api.auth import ALL_SCOPES, TokenVerifier, issue_token
from controlroom.api.problems import ProblemError
from controlroom.cli import Services, build_app
from tests.conftest import job

RUNS = "/api/v1/runs"
SUBMIT = "/api/v1/jobs/run"
AUDIENCE, ISSUER = "controlroom-api", "https://idp.example.com/"
PROBLEM_JSON = "application/problem+json"


class Jwks:
    """A JWKS document served over HTTP; counts how often it is fetched."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.up = True
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                if not jwks.up:
                    self.send_error(503)
                    return
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, kid: str, public_key: Any) -> None:
        algorithm = RSAAlgorithm if isinstance(public_key, rsa.RSAPublicKey) else ECAlgorithm
        self.keys.append({**algorithm.to_jwk(public_key, as_dict=True), "kid": kid, "use": "sig"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(tenant: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "ci-bot", "tenant_id": tenant, "scope": " ".join(ALL_SCOPES), "iat": now,
            "exp": now + 600, "aud": AUDIENCE, "iss": ISSUER, **extra}


def signed(key: Any, alg: str, kid: str, body: dict[str, Any]) -> str:
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def by_hand(header: dict[str, Any], body: dict[str, Any], sign: Any = None) -> str:
    """A token built without pyjwt, which refuses to make these."""
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(body).encode())
    return head + "." + (b64(sign(head.encode())) if sign else "")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON
    assert resp.json()["status"] == status and resp.json()["detail"]
    return resp.json()


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    served = Jwks()
    served.publish("rsa-1", RSA_KEY.public_key())
    served.publish("ec-1", EC_KEY.public_key())
    yield served
    served.close()


@pytest.fixture(scope="module")
def jwks_client(services: Services, jwks: Jwks) -> Iterator[TestClient[Any]]:
    """The session's service, built with CONTROLROOM_JWKS_URL, audience and issuer."""
    settings = msgspec.structs.replace(services.settings, jwks_url=jwks.url,
                                       jwt_audience=AUDIENCE, jwt_issuer=ISSUER)
    with TestClient(build_app(dataclasses.replace(services, settings=settings))) as c:
        yield c


def test_rs256_and_es256_tokens_whose_kid_is_in_the_jwks_are_accepted(
    jwks_client: TestClient[Any], tenant: str,
) -> None:
    rsa_token = signed(RSA_KEY, "RS256", "rsa-1", claims(tenant))
    submitted = jwks_client.post(SUBMIT, json=job("print('hi')"), headers=bearer(rsa_token))
    assert submitted.status_code == 202, submitted.text
    ec_token = signed(EC_KEY, "ES256", "ec-1", claims(tenant, sub="other-bot"))
    run = jwks_client.get(f"{RUNS}/{submitted.json()['run_id']}", headers=bearer(ec_token))
    assert run.status_code == 200 and run.json()["created_by"] == "ci-bot"


def test_hs256_tokens_with_the_shared_secret_keep_working_beside_the_jwks(
    jwks_client: TestClient[Any], services: Services, tenant: str,
) -> None:
    token = issue_token(services.jwt_secret, tenant=tenant, sub="alice", scopes=ALL_SCOPES,
                        ttl_s=600, audience=AUDIENCE, issuer=ISSUER)
    assert jwks_client.get(RUNS, headers=bearer(token)).status_code == 200


def _rsa_public_pem() -> bytes:
    return RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


BAD_TOKENS = {
    "alg none": lambda t: by_hand({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims(t)),
    "HS256 signed with the RSA public key as its secret": lambda t: by_hand(
        {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(t),
        lambda msg: hmac.new(_rsa_public_pem(), msg, hashlib.sha256).digest()),
    "unknown kid": lambda t: signed(RSA_KEY, "RS256", "rsa-unknown", claims(t)),
    "no kid": lambda t: jwt.encode(claims(t), RSA_KEY, algorithm="RS256"),
    "signed by a key not in the JWKS": lambda t: signed(OTHER_RSA_KEY, "RS256", "rsa-1", claims(t)),
    "RS256 naming the EC key": lambda t: signed(RSA_KEY, "RS256", "ec-1", claims(t)),
    "RS512 (not pinned)": lambda t: signed(RSA_KEY, "RS512", "rsa-1", claims(t)),
    "expired": lambda t: signed(RSA_KEY, "RS256", "rsa-1",
                                claims(t, exp=int(time.time()) - 60)),
    "wrong audience": lambda t: signed(RSA_KEY, "RS256", "rsa-1", claims(t, aud="someone-else")),
    "wrong issuer": lambda t: signed(RSA_KEY, "RS256", "rsa-1", claims(t, iss="https://evil/")),
    "missing tenant_id": lambda t: signed(RSA_KEY, "RS256", "rsa-1", claims(t, tenant_id=None)),
}


@pytest.mark.parametrize("name", BAD_TOKENS)
def test_a_forged_or_invalid_asymmetric_token_is_a_401_problem_that_changes_nothing(
    jwks_client: TestClient[Any], services: Services, tenant: str, name: str,
) -> None:
    bad = bearer(BAD_TOKENS[name](tenant))
    resp = jwks_client.post(SUBMIT, json=job("print('should never run')"), headers=bad)
    problem = assert_problem(resp, 401)
    assert resp.headers["www-authenticate"].startswith("Bearer")
    if name == "expired":
        assert "expired" in problem["detail"]
    if name == "unknown kid":
        assert "unknown signing key" in problem["detail"]
    good = issue_token(services.jwt_secret, tenant=tenant, sub="alice", scopes=ALL_SCOPES,
                       ttl_s=600, audience=AUDIENCE, issuer=ISSUER)
    assert jwks_client.get(RUNS, headers=bearer(good)).json()["runs"] == []


def test_without_a_jwks_asymmetric_tokens_are_refused(client: TestClient[Any], tenant: str) -> None:
    resp = client.get(RUNS, headers=bearer(signed(RSA_KEY, "RS256", "rsa-1", claims(tenant))))
    assert "not accepted" in assert_problem(resp, 401)["detail"]


def test_unknown_kids_never_cause_a_fetch_per_request_and_a_rotated_in_key_is_picked_up(
    tenant: str,
) -> None:
    served = Jwks()
    served.publish("rsa-1", RSA_KEY.public_key())
    try:
        verifier = TokenVerifier("unused-secret", audience=AUDIENCE, issuer=ISSUER,
                                 jwks=JwksKeys(served.url, cooldown_s=1.0))
        verify = lambda token: asyncio.run(verifier.verify(token))  # noqa: E731
        assert verify(signed(RSA_KEY, "RS256", "rsa-1", claims(tenant))).sub == "ci-bot"
        assert served.fetches == 1
        for i in range(50):
            with pytest.raises(NotAuthorizedException, match="unknown signing key"):
                verify(signed(RSA_KEY, "RS256", f"made-up-{i}", claims(tenant)))
        assert served.fetches <= 2, "unknown kids must not fetch the JWKS per request"

        served.publish("ec-2", EC_KEY.public_key())  # the issuer rotates a new key in
        time.sleep(1.1)
        assert verify(signed(EC_KEY, "ES256", "ec-2", claims(tenant))).tenant_id == tenant
        fetched = served.fetches
        for _ in range(20):
            verify(signed(EC_KEY, "ES256", "ec-2", claims(tenant, jti=str(time.time_ns()))))
        assert served.fetches == fetched, "known keys are served from memory"
    finally:
        served.close()


def test_an_unreachable_jwks_is_a_503_and_the_last_good_keys_keep_serving(tenant: str) -> None:
    served = Jwks()
    served.publish("rsa-1", RSA_KEY.public_key())
    served.up = False
    try:
        verifier = TokenVerifier("unused-secret", audience=AUDIENCE, issuer=ISSUER,
                                 jwks=JwksKeys(served.url, lifespan_s=0.5, cooldown_s=0.2))
        verify = lambda token: asyncio.run(verifier.verify(token))  # noqa: E731
        with pytest.raises(ProblemError) as refused:
            verify(signed(RSA_KEY, "RS256", "rsa-1", claims(tenant)))
        assert refused.value.status == 503 and "JWKS" in refused.value.detail

        served.up = True
        time.sleep(0.25)
        assert verify(signed(RSA_KEY, "RS256", "rsa-1", claims(tenant))).sub == "ci-bot"
        served.up = False
        time.sleep(0.6)  # the set is stale now, and the URL is down again
        assert verify(signed(RSA_KEY, "RS256", "rsa-1", claims(tenant, jti="x"))).sub == "ci-bot"
    finally:
        served.close()
