"""A job printing its secret encoded (the way a leak would) leaves no trace of it in the log."""

from __future__ import annotations

import base64
import urllib.parse
import uuid
from typing import Any

from litestar.testing import TestClient

from tests.conftest import job, wait_for_status

LEAKER = """\
import base64, os, urllib.parse
s = os.environ["API_KEY"]
b = s.encode()
print("plain", s)
print("reversed", s[::-1])
print("hex", b.hex(), b.hex().upper())
print("b64", base64.b64encode(b).decode(), base64.urlsafe_b64encode(b).decode().rstrip("="))
for pad in (b"", b"x", b"xy"):
    print("stream", base64.b64encode(pad + b + b" and more").decode())
print("url", urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s))
"""


def test_encoded_secrets_are_scrubbed_from_the_log(client: TestClient[Any], auth: dict[str, str]) -> None:
    canary = f"canary/{uuid.uuid4().hex}+x y"
    raw = canary.encode()
    body = job(LEAKER, spec={"description": "leak", "secrets": {"API_KEY": canary}})
    run_id = client.post("/api/v1/jobs/run", json=body, headers=auth).json()["run_id"]
    assert wait_for_status(client, run_id, auth)["status"] == "completed"
    log = client.get(f"/api/v1/runs/{run_id}/logs", headers=auth).text
    forms = [canary, canary[::-1], raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(),
             base64.urlsafe_b64encode(raw).decode().rstrip("="), urllib.parse.quote(canary, safe=""),
             urllib.parse.quote_plus(canary), uuid.UUID(canary[7:39]).hex]
    assert "stream" in log and "url" in log
    assert not [form for form in forms if form in log], log
