"""A 50 MB artifact goes up and comes back through a real `controlroom serve` process whose
memory stays flat: its peak RSS (VmHWM) barely moves while the bytes stream through.

The server runs without a worker, so the submitted run stays queued — active, hence open
to uploads — for as long as the test needs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from controlroom.api.auth import ALL_SCOPES, issue_token
from tests.conftest import job
from tests.live_events import free_port

SIZE_MB = 50
MAX_GROWTH_MB = 20
"""Peak RSS may grow this much at most: buffering the upload would add 50 MB."""
CHUNK = 1024 * 1024


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture
def server(make_server_database: Callable[[], str], tmp_path: Path) -> Iterator[tuple[str, int, str]]:
    """(base url, pid, secret) of `controlroom serve --no-worker` on a database of its own."""
    port, secret = free_port(), "stream-" + uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTROLROOM_", "REDIS_"))}
    env.update(DATABASE_URL=make_server_database(), CONTROLROOM_DATA_DIR=str(tmp_path),
               CONTROLROOM_JWT_SECRET=secret, CONTROLROOM_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "controlroom.cli", "serve", "--no-worker"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, proc.pid, secret
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _blocks(count: int, digest: hashlib._Hash) -> Iterator[bytes]:
    base = os.urandom(CHUNK)
    for i in range(count):
        block = i.to_bytes(8, "big") + base[8:]
        digest.update(block)
        yield block


def test_50_mb_round_trip_in_flat_memory(server: tuple[str, int, str]) -> None:
    url, pid, secret = server
    token = issue_token(secret, tenant="big", sub="t", scopes=ALL_SCOPES, ttl_s=600)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                      timeout=120) as http:
        run_id = http.post("/api/v1/jobs/run", json=job("print(1)")).json()["run_id"]

        def put(path: str, blocks: int, digest: hashlib._Hash) -> dict[str, object]:
            r = http.post("/api/v1/artifacts", params={"run_id": run_id, "path": path},
                          content=_blocks(blocks, digest),
                          headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 201, r.text
            return r.json()

        def fetch(meta: dict[str, object]) -> str:
            digest = hashlib.sha256()
            with http.stream("GET", str(meta["url"])) as r:
                assert r.status_code == 200
                for chunk in r.iter_bytes(CHUNK):
                    digest.update(chunk)
            return digest.hexdigest()

        warm = put("warm-up.bin", 2, hashlib.sha256())  # first-use allocations out of the way
        fetch(warm)
        before = _peak_rss_mb(pid)
        sent = hashlib.sha256()
        meta = put("big.bin", SIZE_MB, sent)
        after_upload = _peak_rss_mb(pid)
        assert meta["size"] == SIZE_MB * CHUNK and meta["sha256"] == sent.hexdigest()
        assert fetch(meta) == sent.hexdigest()
        after_download = _peak_rss_mb(pid)
    print(f"server peak RSS: {before:.1f} MB before, {after_upload:.1f} after the upload, "
          f"{after_download:.1f} after the download")
    assert after_upload - before < MAX_GROWTH_MB
    assert after_download - before < MAX_GROWTH_MB
