"""The artifacts API: uploads (raw and multipart), metadata, ranged downloads, archives, limits.

Uploads go to a run that is still active: a job that sleeps until the test cancels it.
"""

from __future__ import annotations

import hashlib
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
def active_run(client: TestClient[Any], auth: dict[str, str]) -> Iterator[str]:
    """A run that stays running for the test, cancelled afterwards."""
    run_id = client.post("/api/v1/jobs/run", json=job(SLEEPER), headers=auth).json()["run_id"]
    wait_for_status(client, run_id, auth, statuses={"running"})
    yield run_id
    client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth)


def upload(client: TestClient[Any], auth: dict[str, str], run_id: str, path: str, data: bytes,
           content_type: str = "text/csv") -> Any:
    return client.post(ARTIFACTS, params={"run_id": run_id, "path": path}, content=data,
                       headers={**auth, "Content-Type": content_type})


def test_a_raw_upload_is_stored_recorded_and_served(
        client: TestClient[Any], auth: dict[str, str], active_run: str) -> None:
    data = b"id,total\n1,9.50\n2,12.00\n"
    r = upload(client, auth, active_run, "reports/totals.csv", data)
    assert r.status_code == 201, r.text
    meta = r.json()
    assert meta["run_id"] == active_run and meta["path"] == "reports/totals.csv"
    assert meta["size"] == len(data) and meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["content_type"] == "text/csv" and meta["created_at"]
    assert r.headers["location"] == f"{ARTIFACTS}/{meta['artifact_id']}"
    assert client.get(f"{ARTIFACTS}/{meta['artifact_id']}", headers=auth).json() == meta

    content = client.get(meta["url"], headers=auth)
    assert content.status_code == 200 and content.content == data
    assert content.headers["etag"] == f'"{meta["sha256"]}"'
    assert content.headers["content-length"] == str(len(data))
    assert content.headers["accept-ranges"] == "bytes"
    run = client.get(f"/api/v1/runs/{active_run}", headers=auth).json()
    assert meta["url"] in {a["url"] for a in run["artifacts"]}


def test_range_requests(client: TestClient[Any], auth: dict[str, str], active_run: str) -> None:
    data = bytes(range(256)) * 40
    url = upload(client, auth, active_run, "blob.bin", data, "application/octet-stream").json()["url"]

    def get(range_header: str, **extra: str) -> Any:
        return client.get(url, headers={**auth, "Range": range_header, **extra})

    r = get("bytes=100-199")
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert r.headers["content-length"] == "100"
    assert get("bytes=10200-").content == data[10200:]
    assert get("bytes=-16").content == data[-16:]
    assert get("bytes=10000-99999").headers["content-range"] == f"bytes 10000-10239/{len(data)}"
    r = get(f"bytes={len(data)}-")
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    assert r.headers["content-type"] == "application/problem+json"
    assert get("bytes=0-1,5-6").status_code == 200  # several ranges: the whole thing
    assert get("bytes=0-9", **{"If-Range": '"stale"'}).status_code == 200
    etag = client.get(url, headers=auth).headers["etag"]
    assert get("bytes=0-9", **{"If-Range": etag}).status_code == 206
    assert client.get(url, headers={**auth, "If-None-Match": etag}).status_code == 304


def test_a_multipart_upload_takes_its_fields_and_file_part(
        client: TestClient[Any], auth: dict[str, str], active_run: str) -> None:
    r = client.post(ARTIFACTS, headers=auth, data={"run_id": active_run, "path": "plots/a.svg"},
                    files={"file": ("a.svg", b"<svg/>", "image/svg+xml")})
    assert r.status_code == 201, r.text
    meta = r.json()
    assert (meta["path"], meta["content_type"], meta["size"]) == ("plots/a.svg", "image/svg+xml", 6)
    assert client.get(meta["url"], headers=auth).content == b"<svg/>"
    r = client.post(ARTIFACTS, headers=auth, data={"run_id": active_run, "path": "x"},
                    files={"note": (None, b"no file here")})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "file"


def test_a_multipart_upload_keeps_every_field_it_takes_or_refuses_it_by_name(
        client: TestClient[Any], auth: dict[str, str], active_run: str) -> None:
    """Nothing sent is silently dropped: an unknown field, or a field also in the query with
    another value (one of them would be ignored), is a 422 naming it; nothing is stored."""
    svg = {"file": ("a.svg", b"<svg/>", "image/svg+xml")}
    cases = [
        ({}, {"run_id": active_run, "path": "a.svg", "owner": "me"}, "owner"),
        ({"run_id": active_run}, {"run_id": "g" + active_run[1:], "path": "a.svg"}, "run_id"),
        ({"path": "a.svg"}, {"run_id": active_run, "path": "b.svg"}, "path"),
    ]
    before = client.get(f"/api/v1/runs/{active_run}", headers=auth).json()["artifacts"]
    for query, form, field in cases:
        r = client.post(ARTIFACTS, headers=auth, params=query, data=form, files=svg)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == field
    assert client.get(f"/api/v1/runs/{active_run}", headers=auth).json()["artifacts"] == before
    same = client.post(ARTIFACTS, headers=auth, params={"run_id": active_run},
                       data={"run_id": active_run, "path": "a.svg"}, files=svg)
    assert same.status_code == 201, same.text


def test_refusals(client: TestClient[Any], auth: dict[str, str], active_run: str,
                  token: Callable[..., str], tenant: str) -> None:
    other = {"Authorization": f"Bearer {token('other-' + uuid.uuid4().hex[:6])}"}
    meta = upload(client, auth, active_run, "mine.csv", b"a,b\n").json()
    for headers, run_id in ((other, active_run), (auth, str(uuid.uuid4()))):
        r = upload(client, headers, run_id, "x.csv", b"1")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert client.get(f"{ARTIFACTS}/{meta['artifact_id']}", headers=other).status_code == 404
    assert client.get(meta["url"], headers=other).status_code == 404
    assert client.get(f"{ARTIFACTS}/{uuid.uuid4()}", headers=auth).status_code == 404
    for path in ("", "../escape", "/abs"):
        assert upload(client, auth, active_run, path, b"1").status_code == 422
    reader = {"Authorization": f"Bearer {token(tenant, scopes=['artifacts:read'])}"}
    assert upload(client, reader, active_run, "x.csv", b"1").status_code == 403

    done = client.post("/api/v1/jobs/run", json=job("print(1)"), headers=auth).json()["run_id"]
    wait_for_status(client, done, auth)
    r = upload(client, auth, done, "late.csv", b"1")
    assert r.status_code == 409 and "active" in r.json()["detail"]


def test_oversize_uploads_are_413(client: TestClient[Any], auth: dict[str, str],
                                  active_run: str) -> None:
    deps = client.app.state.deps
    limit, deps.max_artifact_bytes = deps.max_artifact_bytes, 1000
    try:
        r = upload(client, auth, active_run, "big.bin", b"x" * 1001)  # announced length
        assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
        chunks = iter([b"y" * 600, b"y" * 600])  # no length announced: counted as it arrives
        r = client.post(ARTIFACTS, params={"run_id": active_run, "path": "big.bin"},
                        content=chunks, headers=auth)
        assert r.status_code == 413
        assert upload(client, auth, active_run, "ok.bin", b"z" * 1000).status_code == 201
    finally:
        deps.max_artifact_bytes = limit
    assert not list(deps.artifacts.spool_dir.glob("upload-*")), "spool files left behind"


def test_code_files_and_the_full_log_are_kept(client: TestClient[Any], auth: dict[str, str]) -> None:
    source = 'print("hello from the job")\nimport sys\nprint("to stderr", file=sys.stderr)\n'
    body = job(source)
    body["code"]["files"].append({"path": "lib/util.py", "content": "X = 1\n"})
    run_id = client.post("/api/v1/jobs/run", json=body, headers=auth).json()["run_id"]
    run = wait_for_status(client, run_id, auth)
    by_path = {a["path"]: a for a in run["artifacts"]}
    assert {"code/main.py", "code/lib/util.py", "logs/run.log"} <= set(by_path)
    assert client.get(by_path["code/main.py"]["url"], headers=auth).text == source
    assert client.get(by_path["code/lib/util.py"]["url"], headers=auth).text == "X = 1\n"
    log = client.get(f"/api/v1/runs/{run_id}/logs", headers=auth).text
    assert "hello from the job" in log
    assert client.get(by_path["logs/run.log"]["url"], headers=auth).text == log


def run_token(services: Services, tenant: str, run_id: str) -> dict[str, str]:
    """The token a job of `run_id` gets, minted as the worker mints it."""
    minted = HmacRunTokens(services.jwt_secret).for_run(tenant, uuid.UUID(run_id), 600)
    return {"Authorization": f"Bearer {minted}"}


@pytest.mark.parametrize("path", ["logs/run.log", "code/main.py", "./logs/run.log", "LOGS/run.log",
                                  "code/lib/util.py", "logs", "logs/other.txt"])
def test_a_job_cannot_upload_where_the_service_archives_code_and_logs(
        client: TestClient[Any], services: Services, auth: dict[str, str], tenant: str,
        active_run: str, path: str) -> None:
    for headers in (run_token(services, tenant, active_run), auth):
        r = upload(client, headers, active_run, path, b"forged log\n", "text/plain")
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
        assert r.json()["errors"][0]["field"] == "path" and repr(path) in r.json()["detail"]
        files = {"file": ("x.txt", b"forged", "text/plain")}
        r = client.post(ARTIFACTS, data={"run_id": active_run, "path": path}, files=files,
                        headers=headers)
        assert r.status_code == 422, r.text
    run = client.get(f"/api/v1/runs/{active_run}", headers=auth).json()
    assert not [a for a in run["artifacts"] if a["path"].lower().startswith(("logs", "code"))
                and "forged" in a["path"]]
    assert upload(client, auth, active_run, "logsheet.csv", b"1").status_code == 201  # a prefix, not a word


def test_a_job_writing_output_under_a_reserved_path_does_not_forge_the_log(
        client: TestClient[Any], auth: dict[str, str]) -> None:
    source = ("import os\nos.makedirs('output/logs', exist_ok=True)\n"
              "open('output/logs/run.log', 'w').write('forged')\nprint('real')\n")
    run = wait_for_status(client, client.post("/api/v1/jobs/run", json=job(source),
                                              headers=auth).json()["run_id"], auth)
    logs = [a for a in run["artifacts"] if a["path"] == "logs/run.log"]
    assert len(logs) == 1 and "forged" not in client.get(logs[0]["url"], headers=auth).text


def test_a_run_token_sees_another_run_of_its_tenant_as_missing(
        client: TestClient[Any], services: Services, auth: dict[str, str], tenant: str,
        active_run: str) -> None:
    done = client.post("/api/v1/jobs/run", json=job("print(1)"), headers=auth).json()["run_id"]
    wait_for_status(client, done, auth)
    mine = run_token(services, tenant, active_run)
    answers = []
    for target in (done, str(uuid.uuid4())):
        r = upload(client, mine, target, "x.csv", b"1")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        answers.append({k: v for k, v in r.json().items() if k != "detail"})
        r = client.post(ARTIFACTS, data={"run_id": target, "path": "x.csv"},
                        files={"file": ("x.csv", b"1", "text/csv")}, headers=mine)
        assert r.status_code == 404, r.text
        r = client.post(f"/api/v1/runs/{target}/events", headers=mine,
                        json={"event_type": "progress", "percent": 5})
        assert r.status_code == 404, r.text
        for other in (f"/api/v1/runs/{target}", f"/api/v1/runs/{target}/logs",
                      f"/api/v1/runs/{target}/events"):  # not its scopes: refused, blind to the run
            answers.append(client.get(other, headers=mine).status_code)
        answers.append(client.post(f"/api/v1/runs/{target}/cancel", headers=mine).status_code)
    half = len(answers) // 2
    assert answers[:half] == answers[half:]  # a finished run of its tenant looks like no run at all
    assert upload(client, mine, active_run, "ok.csv", b"1").status_code == 201
