"""PRD FR-7: POST an artifact, GET it by id and its content, and list the tenant's artifacts
(`GET /api/v1/artifacts?run_id=&path_prefix=&limit=&cursor=`, newest first)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from controlroom.adapters.runs.tokens import HmacRunTokens
from controlroom.cli import Services
from tests.conftest import job, wait_for_status

ARTIFACTS = "/api/v1/artifacts"
SLEEPER = "import time\ntime.sleep(120)\n"


@pytest.fixture
def runs(client: TestClient[Any], auth: dict[str, str]) -> Iterator[list[str]]:
    """Two running runs of the test's tenant."""
    ids = [client.post("/api/v1/jobs/run", json=job(SLEEPER), headers=auth).json()["run_id"]
           for _ in range(2)]
    for run_id in ids:
        wait_for_status(client, run_id, auth, statuses={"running"})
    yield ids
    for run_id in ids:
        client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth)


def upload(client: TestClient[Any], auth: dict[str, str], run_id: str, path: str) -> dict[str, Any]:
    r = client.post(ARTIFACTS, params={"run_id": run_id, "path": path}, content=path.encode(),
                    headers={**auth, "Content-Type": "text/plain"})
    assert r.status_code == 201, r.text
    return dict(r.json())


def listed(client: TestClient[Any], headers: dict[str, str], **params: Any) -> Any:
    """A page of artifacts, less those the service archives itself (each run's `code/`)."""
    r = client.get(ARTIFACTS, params=params, headers=headers)
    assert r.status_code == 200, r.text
    page = r.json()
    return {**page, "artifacts": [a for a in page["artifacts"] if not a["path"].startswith("code/")]}


def test_post_get_content_and_list(client: TestClient[Any], auth: dict[str, str],
                                   runs: list[str]) -> None:
    first, second = runs
    a = upload(client, auth, first, "output/a.csv")
    b = upload(client, auth, first, "diagrams/flow.svg")
    c = upload(client, auth, second, "output/c.csv")
    assert client.get(f"{ARTIFACTS}/{a['artifact_id']}", headers=auth).json() == a
    assert client.get(a["url"], headers=auth).content == b"output/a.csv"

    everything = listed(client, auth)
    assert [x["artifact_id"] for x in everything["artifacts"]] == [
        c["artifact_id"], b["artifact_id"], a["artifact_id"]]  # newest first
    assert everything["artifacts"][0] == c and everything["next_cursor"] is None
    assert [x["path"] for x in listed(client, auth, run_id=first)["artifacts"]] == [
        "diagrams/flow.svg", "output/a.csv"]
    assert [x["path"] for x in listed(client, auth, path_prefix="output/")["artifacts"]] == [
        "output/c.csv", "output/a.csv"]


def test_pages_follow_the_cursor_to_the_end(client: TestClient[Any], auth: dict[str, str],
                                            runs: list[str]) -> None:
    made = [upload(client, auth, runs[0], f"part-{i}.txt")["artifact_id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        page = listed(client, auth, limit=2, path_prefix="part-",
                      **({"cursor": cursor} if cursor else {}))
        seen += [x["artifact_id"] for x in page["artifacts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    assert len(listed(client, auth, limit=2)["artifacts"]) == 2
    bad = client.get(ARTIFACTS, params={"cursor": "not-ours"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


def test_another_tenant_and_another_runs_token_see_none_of_them(
        client: TestClient[Any], auth: dict[str, str], tenant: str, runs: list[str],
        token: Callable[..., str], services: Services) -> None:
    mine = upload(client, auth, runs[0], "mine.txt")
    upload(client, auth, runs[1], "other-run.txt")
    stranger = {"Authorization": f"Bearer {token('tenant-' + uuid.uuid4().hex[:8])}"}
    assert listed(client, stranger)["artifacts"] == []
    assert client.get(f"{ARTIFACTS}/{mine['artifact_id']}", headers=stranger).status_code == 404

    minted = HmacRunTokens(services.jwt_secret).for_run(tenant, uuid.UUID(runs[0]), 600)
    run_token = {"Authorization": f"Bearer {minted}"}
    assert [x["path"] for x in listed(client, run_token)["artifacts"]] == ["mine.txt"]
    assert client.get(ARTIFACTS, params={"run_id": runs[1]}, headers=run_token).status_code == 404
    assert client.get(f"{ARTIFACTS}/{mine['artifact_id']}", headers=run_token).status_code == 200
