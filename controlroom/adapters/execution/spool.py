"""Spools on the worker's disk: one file per attempt under `<data dir>/spool/`.

A file is a sequence of frames — length and CRC-32 (4 bytes each, big-endian), then the
record — appended and fsynced before the worker goes on, so what the worker read of a job
survives the worker. A frame torn by a crash fails its length or CRC and ends the file there.

Ownership is an exclusive `flock` on the open file: the worker supervising the attempt holds
it; when that process ends, crashed or not, the kernel lets it go and any worker on the same
data dir may take the spool over and deliver it. A rewrite (a full spool cut down) replaces
the file by rename, locked before it appears, so a taker always checks that the file it locked
is still the one at the path.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

from controlroom.commands.execution.spooled import DEFAULT_SPOOL_MAX_BYTES

log = logging.getLogger("controlroom.worker")

SUFFIX = ".spool"
HEADER = struct.Struct(">II")
"""Frame header: payload length, CRC-32 of the payload."""
MAX_FRAME_BYTES = 256 * 1024 * 1024
"""A length above this is damage, not a record (records are a few hundred KiB at most)."""


class SpoolHeldError(OSError):
    """Another process holds the spool."""


class FileSpool:
    """One attempt's spool file, held (flock) by this object until `close` or `delete`."""

    def __init__(self, path: Path, run_id: UUID, attempt: int, fd: int) -> None:
        self.path, self.run_id, self.attempt, self._fd = path, run_id, attempt, fd
        self._size = os.fstat(fd).st_size
        good = max((end for _, end in self.frames()), default=0)
        if good < self._size:  # a torn tail: later frames go after good ones
            log.warning("spool %s: dropping a torn record at its end (a crash while writing)",
                        path.name)
            os.ftruncate(fd, good)
            os.fsync(fd)
            self._size = good

    def append(self, frames: list[bytes]) -> None:
        data = b"".join(HEADER.pack(len(f), zlib.crc32(f)) + f for f in frames)
        view, pos = memoryview(data), self._size
        while view:  # positional writes and reads: no shared file offset to race on
            n = os.pwrite(self._fd, view, pos)
            view, pos = view[n:], pos + n
        os.fsync(self._fd)
        self._size += len(data)

    def read(self, offset: int) -> tuple[bytes, int] | None:
        if offset >= self._size:
            return None
        header = os.pread(self._fd, HEADER.size, offset)
        if len(header) < HEADER.size:
            return None
        length, crc = HEADER.unpack(header)
        if length > MAX_FRAME_BYTES:
            return None
        payload = os.pread(self._fd, length, offset + HEADER.size)
        if len(payload) < length or zlib.crc32(payload) != crc:
            return None
        return payload, offset + HEADER.size + length

    def frames(self, offset: int = 0) -> Iterator[tuple[bytes, int]]:
        while (frame := self.read(offset)) is not None:
            yield frame
            offset = frame[1]

    def rewrite(self, frames: list[bytes]) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # before anyone can see it
            new = FileSpool.__new__(FileSpool)
            new.path, new.run_id, new.attempt, new._fd, new._size = (
                self.path, self.run_id, self.attempt, fd, 0)
            new.append(frames)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd, self._size = fd, new._size

    def size(self) -> int:
        return self._size

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # lets the lock go
            self._fd = -1


class FileSpools:
    """The spool directory of a worker's data dir."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_SPOOL_MAX_BYTES) -> None:
        self.root, self.max_bytes = root, max_bytes

    def open(self, run_id: UUID, attempt: int) -> FileSpool:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        spool = _take(self.root / f"{run_id}.{attempt}{SUFFIX}", run_id, attempt, create=True)
        if spool is None:
            raise SpoolHeldError(f"spool of run {run_id} attempt {attempt} is held elsewhere")
        return spool

    def orphans(self) -> Iterator[FileSpool]:
        try:
            names = sorted(p.name for p in self.root.iterdir() if p.name.endswith(SUFFIX))
        except FileNotFoundError:
            return
        for name in names:
            try:
                run_part, attempt_part = name[: -len(SUFFIX)].rsplit(".", 1)
                run_id, attempt = UUID(run_part), int(attempt_part)
            except ValueError:
                continue  # not one of ours
            try:
                spool = _take(self.root / name, run_id, attempt, create=False)
            except OSError as e:
                log.warning("spool %s: can't be opened: %s", name, e)
                continue
            if spool is not None:
                yield spool


def _take(path: Path, run_id: UUID, attempt: int, *, create: bool) -> FileSpool | None:
    """The spool at `path`, locked; None if another holds it or it is gone."""
    for _ in range(10):  # raced by a rewrite or a delete: look again
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            if create:
                _fsync_dir(path.parent)
            return FileSpool(path, run_id, attempt, fd)
        os.close(fd)
        if not create:
            continue
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
