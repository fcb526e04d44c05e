"""What a worker spools while the database is away: one attempt's writes, numbered, in order.

Every write a worker makes for an attempt — a chunk of log, a progress step, lineage, the
artifacts it stored, the outcome — is a record with the attempt's next sequence number. The
record is what gets recorded (see `Run.recorded_seq`): delivered straight away while the
database answers, appended to the attempt's spool on local disk while it does not, and
delivered from there in order once it answers again. A record delivered twice changes nothing.

The spool is bounded (`SpoolPort` sizes, `shrink`): past its cap the oldest log and progress
records give way to one marker saying how much was dropped; lineage, artifacts and the outcome
are never dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol
from uuid import UUID

import msgspec

DEFAULT_SPOOL_MAX_BYTES = 64 * 1024 * 1024
"""Per running job: what its spool may hold on the worker's disk before old output gives way."""
SHRINK_TO = 0.75
"""A full spool is cut to this share of the cap, so cutting is rare, not one per write."""


class LogRecord(msgspec.Struct, tag="log", array_like=True):
    """(stream, text, line count) chunks of output, read at `at` (Unix time)."""

    seq: int
    at: float
    entries: list[tuple[str, str, int]]


class ProgressRecord(msgspec.Struct, tag="progress", array_like=True):
    seq: int
    at: float
    percent: float | None
    message: str


class LineageRecord(msgspec.Struct, tag="lineage", array_like=True):
    seq: int
    at: float
    edges: list[tuple[str, str]]


class ArtifactsRecord(msgspec.Struct, tag="artifacts", array_like=True):
    """Artifacts whose bytes are already in the artifact store."""

    seq: int
    artifacts: list[dict[str, Any]]


class DroppedRecord(msgspec.Struct, tag="dropped", array_like=True):
    """Stands where output was dropped from a full spool; recorded as a line of the log."""

    seq: int
    lines: int
    size: int
    progress: int

    def text(self) -> str:
        steps = f" and {self.progress} progress updates" if self.progress else ""
        return (f"[{self.lines} lines ({self.size} bytes) of output{steps} dropped here: the "
                "database was away and this job's spool on the worker was full "
                "(CONTROLROOM_SPOOL_MAX_BYTES)]")


class OutcomeRecord(msgspec.Struct, tag="outcome", array_like=True):
    """How the attempt ended: `completed`, `failed` or `cancelled`.

    `seq - 1` is kept for the archived log, stored just before the outcome is recorded (it is
    read back from the log, so it can only be written once everything before it is there).
    """

    seq: int
    status: str
    summary: str = ""
    reason: str = ""
    message: str = ""
    exit_code: int | None = None


Record = LogRecord | ProgressRecord | LineageRecord | ArtifactsRecord | DroppedRecord | OutcomeRecord
DROPPABLE = (LogRecord, ProgressRecord, DroppedRecord)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


def encode(record: Record) -> bytes:
    """One record as bytes for a spool."""
    return _encoder.encode(record)


def decode(data: bytes) -> Record:
    """A record from its bytes (raises msgspec.DecodeError on damage)."""
    return _decoder.decode(data)


class SpoolPort(Protocol):
    """One attempt's spool: frames appended durably, read back in order, cut or removed.

    While open, it is this process's alone (a crashed owner's spool can be opened by another).
    """

    run_id: UUID
    attempt: int

    def append(self, frames: list[bytes]) -> None:
        """Append `frames` in order; durable (fsynced) when this returns."""
        ...

    def read(self, offset: int) -> tuple[bytes, int] | None:
        """The frame at `offset` and the offset just past it; None at the end (or a torn tail)."""
        ...

    def frames(self, offset: int = 0) -> Iterator[tuple[bytes, int]]:
        """(frame, offset just past it) from `offset`, in order; a torn tail is left out."""
        ...

    def rewrite(self, frames: list[bytes]) -> None:
        """Replace the whole content with `frames`, atomically."""
        ...

    def size(self) -> int:
        """Bytes held, framing included."""
        ...

    def delete(self) -> None:
        """Remove the spool (everything in it is recorded) and let it go."""
        ...

    def close(self) -> None:
        """Let the spool go, leaving it for whoever opens it next."""
        ...


class SpoolsPort(Protocol):
    """Where a worker keeps its attempts' spools (a directory in its data dir)."""

    max_bytes: int

    def open(self, run_id: UUID, attempt: int) -> SpoolPort:
        """The attempt's spool, created if need be, held by this process until closed."""
        ...

    def orphans(self) -> Iterator[SpoolPort]:
        """Spools nobody holds (their worker ended or crashed), each held once yielded."""
        ...


class MemorySpool:
    """A spool in memory: where records wait when there is no spool directory, or it can't be
    written (full disk). Not durable: a crash loses it, as before spools existed."""

    def __init__(self, run_id: UUID, attempt: int) -> None:
        self.run_id, self.attempt = run_id, attempt
        self._frames: list[bytes] = []
        self._ends: list[int] = []
        self._size = 0

    def append(self, frames: list[bytes]) -> None:
        for frame in frames:
            self._size += len(frame)
            self._frames.append(frame)
            self._ends.append(self._size)

    def read(self, offset: int) -> tuple[bytes, int] | None:
        return next(self.frames(offset), None)

    def frames(self, offset: int = 0) -> Iterator[tuple[bytes, int]]:
        for frame, end in zip(self._frames, self._ends, strict=True):
            if end > offset:
                yield frame, end

    def rewrite(self, frames: list[bytes]) -> None:
        self._frames, self._ends, self._size = [], [], 0
        self.append(frames)

    def size(self) -> int:
        return self._size

    def delete(self) -> None:
        self.rewrite([])

    def close(self) -> None:
        pass


def shrink(records: list[Record], target: int, after: int = 0) -> list[Record]:
    """`records` within `target` bytes (about): the oldest log and progress records numbered
    above `after` (those up to it may be on their way to the log) dropped, one DroppedRecord in
    their place — where the last of them was, with its number, so numbers keep rising along
    the spool; the others kept whatever their size."""
    sizes = [len(encode(r)) for r in records]
    total = sum(sizes)
    kept: list[Record] = []
    marker_at: int | None = None
    lines = size = progress = 0
    last_seq = 0
    for record, n in zip(records, sizes, strict=True):
        if total > target and isinstance(record, DROPPABLE) and record.seq > after:
            total -= n
            marker_at, last_seq = len(kept), record.seq
            match record:
                case LogRecord(entries=entries):
                    lines += sum(e[2] for e in entries)
                    size += sum(len(e[1].encode()) for e in entries)
                case ProgressRecord():
                    progress += 1
                case DroppedRecord():
                    lines, size, progress = (lines + record.lines, size + record.size,
                                             progress + record.progress)
            continue
        kept.append(record)
    if marker_at is not None:
        kept.insert(marker_at, DroppedRecord(seq=last_seq, lines=lines, size=size,
                                             progress=progress))
    return kept
