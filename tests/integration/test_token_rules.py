"""Token rules beyond the signature: numeric times, non-blank names, a maximum lifetime for users."""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from litestar.testing import TestClient

from controlroom.adapters.runs.tokens import HmacRunTokens
from controlroom.api.auth import ALL_SCOPES, DEFAULT_MAX_LIFETIME_S, issue_token
from controlroom.cli import Services
from controlroom.cli.admin import cmd_token
from controlroom.settings import Settings, from_env

RUNS = "/api/v1/runs"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_user_token_of_exactly_the_maximum_lifetime_passes(
        client: TestClient[Any], services: Services) -> None:
    token = issue_token(services.jwt_secret, tenant="t-max", sub="alice", scopes=ALL_SCOPES,
                        ttl_s=DEFAULT_MAX_LIFETIME_S)
    assert client.get(RUNS, headers=bearer(token)).status_code == 200


def test_a_token_issued_long_ago_is_measured_from_its_iat(
        client: TestClient[Any], services: Services) -> None:
    now = int(time.time())
    claims = {"sub": "alice", "tenant_id": "t-old", "scope": "runs:read",
              "iat": now - 3 * 24 * 3600, "exp": now + 600}  # 10 minutes left of a 3-day token
    resp = client.get(RUNS, headers=bearer(jwt.encode(claims, services.jwt_secret, algorithm="HS256")))
    assert resp.status_code == 401 and "maximum" in resp.json()["detail"]


def test_a_run_token_may_outlive_the_user_maximum(client: TestClient[Any], services: Services) -> None:
    run_id = uuid.uuid4()  # no such run: a 404 proves the token itself was accepted
    token = HmacRunTokens(services.jwt_secret).for_run("t-run", run_id, 3 * 24 * 3600)
    resp = client.post(f"{RUNS}/{run_id}/events", headers=bearer(token),
                       json={"event_type": "progress", "percent": 1})
    assert resp.status_code == 404, resp.text


def test_the_maximum_is_a_setting(tmp_path: Path) -> None:
    assert from_env({"CONTROLROOM_DATA_DIR": str(tmp_path)}).jwt_max_lifetime_s == 24 * 3600
    assert from_env({"CONTROLROOM_DATA_DIR": str(tmp_path),
                     "CONTROLROOM_JWT_MAX_LIFETIME_S": "3600"}).jwt_max_lifetime_s == 3600


def _cli_token(settings: Settings, ttl: int, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    args = argparse.Namespace(tenant="t-cli", sub="alice", scope=" ".join(ALL_SCOPES), ttl=ttl)
    code = cmd_token(settings, args)
    return code, capsys.readouterr().out.strip()


def test_the_cli_token_passes_and_refuses_a_ttl_the_server_would(
        client: TestClient[Any], settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    most = settings.jwt_max_lifetime_s
    for ttl in (3600, most):
        code, token = _cli_token(settings, ttl, capsys)
        assert code == 0 and client.get(RUNS, headers=bearer(token)).status_code == 200
    code, token = _cli_token(settings, most + 1, capsys)
    assert code == 2 and token == ""
