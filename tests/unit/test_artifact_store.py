"""The local artifact store keeps bytes by content, whole or not at all.

Proven here: bytes come back as stored, under `sha256/ab/abcdef…`, with the digest and size
reported; identical content is stored once; a write that fails before its rename leaves
neither a stored file nor a temp file; big files are streamed (memory stays flat); symlinks
and non-digests are refused; stale temp files from a crash are swept at start-up. And an
artifact's content type is guessed from its extension the same way on every machine.
"""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from controlroom.adapters.artifacts.local_store import STALE_TMP_S, LocalArtifactStore
from controlroom.commands.execution.outputs import content_type


def _stored(root: Path) -> list[Path]:
    return sorted(p for p in (root / "sha256").rglob("*") if p.is_file())


def test_bytes_round_trip_under_their_sha256(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    src = tmp_path / "report.csv"
    src.write_bytes(b"a,b\n1,2\n")
    digest, size = store.put_file(src)
    assert digest == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert size == 8
    assert _stored(tmp_path / "store") == [tmp_path / "store" / "sha256" / digest[:2] / digest]
    with store.open(digest) as f:
        assert f.read() == b"a,b\n1,2\n"


def test_identical_content_is_stored_once(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_bytes(b"same bytes")
    two.write_bytes(b"same bytes")
    assert store.put_file(one) == store.put_file(two)
    assert len(_stored(tmp_path / "store")) == 1
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def test_an_empty_file_is_an_artifact_too(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    (tmp_path / "empty").write_bytes(b"")
    digest, size = store.put_file(tmp_path / "empty")
    assert (digest, size) == (hashlib.sha256(b"").hexdigest(), 0)


def test_a_write_failing_before_the_rename_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.put_file(src)
    assert _stored(tmp_path / "store") == []
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def test_big_files_are_streamed_not_read_whole(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    src = tmp_path / "big.bin"
    chunk = os.urandom(1024 * 1024)
    with src.open("wb") as f:
        for _ in range(48):
            f.write(chunk)
    tracemalloc.start()
    try:
        digest, size = store.put_file(src)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 48 * 1024 * 1024
    assert digest == hashlib.sha256(chunk * 48).hexdigest()
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes: the file was not streamed"


def test_symlinks_are_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    secret = tmp_path / "outside.txt"
    secret.write_text("not for artifacts")
    link = tmp_path / "link.txt"
    link.symlink_to(secret)
    with pytest.raises(OSError):
        store.put_file(link)
    assert _stored(tmp_path / "store") == []


@pytest.mark.parametrize("digest", ["../../etc/passwd", "ABC", "0" * 63, "g" * 64, ""])
def test_only_digests_can_be_opened(tmp_path: Path, digest: str) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    with pytest.raises(FileNotFoundError):
        store.open(digest)


def test_absent_content_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LocalArtifactStore(tmp_path / "store").open("0" * 64)


def test_stale_temp_files_are_swept_at_start_up(tmp_path: Path) -> None:
    LocalArtifactStore(tmp_path / "store")
    tmp = tmp_path / "store" / "tmp"
    stale, fresh = tmp / "put-stale", tmp / "put-fresh"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - STALE_TMP_S - 60
    os.utime(stale, (old, old))
    LocalArtifactStore(tmp_path / "store")
    assert sorted(tmp.iterdir()) == [fresh]


@pytest.mark.parametrize(("path", "expected"), [
    ("report.csv", "text/csv"), ("sub/data.JSON", "application/json"), ("notes.md", "text/markdown"),
    ("chart.svg", "image/svg+xml"), ("chart.png", "image/png"), ("rows.csv.gz", "application/gzip"),
    ("blob", "application/octet-stream"), ("dir.d/blob", "application/octet-stream"),
    ("data.parquet", "application/vnd.apache.parquet"),
])
def test_content_types_come_from_the_extension(path: str, expected: str) -> None:
    assert content_type(path) == expected
