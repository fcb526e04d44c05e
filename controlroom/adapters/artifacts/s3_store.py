"""Artifact bytes in an S3-compatible object store (AWS S3, Supabase Storage, MinIO…), via obstore.

Same layout as the local store — `<prefix>/sha256/ab/abcdef…`, content-addressed, each
object written once — so API replicas and workers on different machines share artifacts.
obstore (Rust's `object_store`) does the HTTP: multipart uploads for large files, ranged
reads for seeks, retries. Credentials and region come from the usual `AWS_*` variables;
`endpoint` points at a non-AWS server. Uploads are hashed before they are sent (the key is
the digest), from a local spool file, so memory stays flat whatever the size.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

from controlroom.adapters.artifacts.local_store import CHUNK_BYTES, SHA256_PATTERN

if TYPE_CHECKING:
    from obstore.store import ClientConfig  # for type checkers only: not importable at run time

CONNECT_TIMEOUT = "5s"
REQUEST_TIMEOUT = "300s"
"""One request; multipart uploads send 5 MiB parts, so this is per part, not per file."""
READ_BUFFER_BYTES = 1024 * 1024
_MISSING = (FileNotFoundError, NotFoundError)
"""obstore reports a missing object as FileNotFoundError; older releases as NotFoundError."""


class _Reader:
    """A seekable binary reader over an object (obstore's ReadableFile, yielding `bytes`)."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def read(self, size: int = -1) -> bytes:
        return bytes(self._file.read(size) if size >= 0 else self._file.read())

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return int(self._file.seek(offset, whence))

    def tell(self) -> int:
        return int(self._file.tell())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class S3ArtifactStore:
    """Content-addressed artifact bytes in a bucket (`s3://bucket/prefix`)."""

    def __init__(self, url: str, *, spool_dir: Path, endpoint: str | None = None) -> None:
        options: ClientConfig = {"connect_timeout": CONNECT_TIMEOUT, "timeout": REQUEST_TIMEOUT}
        if endpoint and endpoint.startswith("http://"):
            options["allow_http"] = True  # a local or in-cluster server without TLS
        self.store = S3Store.from_url(
            url, config={"endpoint": endpoint} if endpoint else None, client_options=options,
        )
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @staticmethod
    def key(sha256: str) -> str:
        """The object key of the bytes with this digest."""
        return f"sha256/{sha256[:2]}/{sha256}"

    def put_file(self, path: Path) -> tuple[str, int]:
        """Upload a regular file (symlinks refused) unless its content is stored already."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                raise OSError(f"{path} is not a regular file")
            digest, size = hashlib.sha256(), 0
            while chunk := src.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
            sha256 = digest.hexdigest()
            if not self._exists(sha256):
                src.seek(0)
                obstore.put(self.store, self.key(sha256), src)
        return sha256, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Upload bytes held in memory unless stored already."""
        sha256 = hashlib.sha256(data).hexdigest()
        if not self._exists(sha256):
            obstore.put(self.store, self.key(sha256), data)
        return sha256, len(data)

    def put_spooled(self, path: Path, sha256: str) -> None:
        """Upload a spooled file whose digest is known, then delete it."""
        if not SHA256_PATTERN.match(sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        try:
            if not self._exists(sha256):
                obstore.put(self.store, self.key(sha256), Path(path))
        finally:
            Path(path).unlink(missing_ok=True)

    def open(self, sha256: str) -> BinaryIO:
        """A seekable reader of stored bytes; FileNotFoundError if absent."""
        if not SHA256_PATTERN.match(sha256):
            raise FileNotFoundError(f"not a sha256 digest: {sha256!r}")
        try:
            file = obstore.open_reader(self.store, self.key(sha256), buffer_size=READ_BUFFER_BYTES)
        except _MISSING:
            raise FileNotFoundError(f"no object {self.key(sha256)}") from None
        return cast(BinaryIO, _Reader(file))

    def _exists(self, sha256: str) -> bool:
        try:
            obstore.head(self.store, self.key(sha256))
        except _MISSING:
            return False
        return True
