"""Artifact bytes on the local filesystem, content-addressed: `<root>/sha256/ab/abcdef…`.

Writes stream through a temp file in `<root>/tmp` (same filesystem) and are renamed into
place once complete and fsynced, so a reader never sees a partial artifact and a crash
leaves only a temp file behind. Identical content is stored once.

Limit: the root must be shared by the workers that write and the API that reads (one
machine, or a shared volume); an object-store adapter takes its place otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1024 * 1024
STALE_TMP_S = 24 * 3600
"""Temp files older than this are leftovers of a crashed write and are swept at start-up."""
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


class LocalArtifactStore:
    """Content-addressed artifact bytes under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.spool_dir = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._sweep()

    def put_file(self, path: Path) -> tuple[str, int]:
        """Copy a regular file into the store; (sha256 hex, size). Symlinks are refused."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                raise OSError(f"{path} is not a regular file")
            return self._put(src)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store bytes held in memory; (sha256 hex, size)."""
        return self._put(io.BytesIO(data))

    def put_spooled(self, path: Path, sha256: str) -> None:
        """Move a file written under `spool_dir`, whose digest is `sha256`, into place."""
        if not SHA256_PATTERN.match(sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        self._place(Path(path), sha256)

    def open(self, sha256: str) -> BinaryIO:
        """Read stored bytes; FileNotFoundError if absent."""
        if not SHA256_PATTERN.match(sha256):
            raise FileNotFoundError(f"not a sha256 digest: {sha256!r}")
        return self.path_of(sha256).open("rb")

    def path_of(self, sha256: str) -> Path:
        """Where the bytes with this digest live (whether or not they exist)."""
        return self.root / "sha256" / sha256[:2] / sha256

    def _put(self, src: BinaryIO) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as dst:
                while chunk := src.read(CHUNK_BYTES):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            hexdigest = digest.hexdigest()
            self._place(tmp, hexdigest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return hexdigest, size

    def _place(self, tmp: Path, sha256: str) -> None:
        target = self.path_of(sha256)
        if target.exists():
            tmp.unlink()  # same content already stored
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)

    def _sweep(self) -> None:
        cutoff = time.time() - STALE_TMP_S
        for leftover in self._tmp.iterdir():
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
