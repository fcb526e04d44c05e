"""The S3 artifact store (obstore) against a local S3-compatible server.

No real object store can run here, so the test starts moto's S3 server (`moto[server]`,
installable from PyPI) on a free loopback port: real HTTP, real SigV4 signing, real
multipart uploads and ranged GETs — only the server is a stand-in for AWS or Supabase Storage.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from litestar.testing import TestClient
from moto.server import ThreadedMotoServer

from controlroom.adapters.artifacts.s3_store import S3ArtifactStore
from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import bootstrap, build_app
from controlroom.settings import Settings
from tests.conftest import job

BUCKET = "artifacts"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    """(endpoint, boto3 client) of a moto S3 server holding an empty bucket."""
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield endpoint, client
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _keys(client: Any, prefix: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_the_store_writes_once_by_digest_and_reads_by_range(
        s3: tuple[str, Any], tmp_path: Path) -> None:
    endpoint, client = s3
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    store = S3ArtifactStore(f"s3://{BUCKET}/{prefix}", spool_dir=tmp_path / "spool",
                            endpoint=endpoint)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))  # over one 5 MiB part: a multipart upload
    sha, size = store.put_file(big)
    assert (sha, size) == (hashlib.sha256(big.read_bytes()).hexdigest(), big.stat().st_size)
    assert store.put_file(big) == (sha, size)  # the same content again: nothing new
    assert _keys(client, prefix) == [f"{prefix}/sha256/{sha[:2]}/{sha}"]
    with store.open(sha) as f:
        f.seek(7_000_000)
        assert f.read(1000) == big.read_bytes()[7_000_000:7_001_000]

    small_sha, _ = store.put_bytes(b"print('hi')\n")
    with store.open(small_sha) as f:
        assert f.read() == b"print('hi')\n"
    spooled = store.spool_dir / "upload-x"
    spooled.write_bytes(b"spooled bytes")
    store.put_spooled(spooled, hashlib.sha256(b"spooled bytes").hexdigest())
    assert not spooled.exists()
    assert len(_keys(client, prefix)) == 3
    with pytest.raises(FileNotFoundError):
        store.open("0" * 64)
    link = tmp_path / "link"
    link.symlink_to(big)
    with pytest.raises(OSError):
        store.put_file(link)


def test_the_api_uploads_to_and_serves_from_the_bucket(
        s3: tuple[str, Any], make_server_database: Callable[[], str], tmp_path: Path) -> None:
    endpoint, client = s3
    prefix = f"api-{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=make_server_database(), data_dir=tmp_path,
                        jwt_secret="s3-" + uuid.uuid4().hex,
                        artifact_store=f"s3://{BUCKET}/{prefix}", s3_endpoint=endpoint)
    data = os.urandom(300_000)
    with bootstrap(settings, run_worker=False) as services, TestClient(build_app(services)) as http:
        token = issue_token(services.jwt_secret, tenant="s3", sub="t", scopes=ALL_SCOPES, ttl_s=600)
        auth = {"Authorization": f"Bearer {token}"}
        run_id = http.post("/api/v1/jobs/run", json=job("print(1)"), headers=auth).json()["run_id"]
        r = http.post("/api/v1/artifacts", params={"run_id": run_id, "path": "out/data.bin"},
                      content=data, headers=auth)
        assert r.status_code == 201, r.text
        meta = r.json()
        sha = hashlib.sha256(data).hexdigest()
        assert meta["sha256"] == sha
        assert _keys(client, prefix) == [f"{prefix}/sha256/{sha[:2]}/{sha}"]
        assert http.get(meta["url"], headers=auth).content == data
        part = http.get(meta["url"], headers={**auth, "Range": "bytes=123456-123999"})
        assert part.status_code == 206 and part.content == data[123456:124000]
