"""Delivering an attempt's numbered writes exactly once, through a spool while the database is away.

`Outbox` is one attempt's, inside its worker: records go straight to the log while it takes
them; the first that can't be delivered (the database away) and every one after it go to the
attempt's spool, durable on the worker's disk, and are delivered from there in order once the
database answers. `SpoolFlusher` delivers the spools a worker left behind — it crashed, was
stopped, or lost its lease — from any worker process on the same data dir.

Exactly once: each record carries its attempt's sequence number and the Run records it along
(`Run.recorded_seq`), so delivering a record again — after a crash between the commit and the
spool's note of it, or a timeout that hid a commit — changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Self
from uuid import UUID

import msgspec

from controlroom.commands.errors import RunNotFoundError
from controlroom.commands.execution.spooled import (
    DEFAULT_SPOOL_MAX_BYTES,
    SHRINK_TO,
    ArtifactsRecord,
    DroppedRecord,
    LineageRecord,
    LogRecord,
    MemorySpool,
    OutcomeRecord,
    ProgressRecord,
    Record,
    SpoolPort,
    SpoolsPort,
    decode,
    encode,
    shrink,
)
from controlroom.commands.ports import ArtifactStore
from controlroom.commands.retrying import Backoff, is_unavailable
from controlroom.commands.runs.archive import archive_log
from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.errors import DomainError
from controlroom.domain.runs.run import Run
from controlroom.services import ThreadService

log = logging.getLogger("controlroom.worker")

ORPHAN_SCAN_S = 5.0
"""How often a worker looks for spools nobody holds (at start, then this often)."""


def deliver(commands: RunCommands, artifacts: ArtifactStore | None, run_id: UUID, attempt: int,
            record: Record, *, spooled: bool) -> None:
    """Record one record on its run (a repeat changes nothing). A record that waited in a
    spool keeps the time its line was read as the event's `reported_at`."""
    def when(at: float) -> datetime | None:
        return datetime.fromtimestamp(at, UTC) if spooled else None

    match record:
        case LogRecord(seq=seq, at=at, entries=entries):
            commands.log(run_id, entries, attempt, seq=seq, reported_at=when(at))
        case ProgressRecord(seq=seq, at=at, percent=percent, message=message):
            commands.progress(run_id, percent, message, attempt, seq=seq, reported_at=when(at))
        case LineageRecord(seq=seq, at=at, edges=edges):
            commands.lineage(run_id, edges, attempt, seq=seq, reported_at=when(at))
        case ArtifactsRecord(seq=seq, artifacts=items):
            commands.add_artifacts(run_id, items, attempt, seq=seq)
        case DroppedRecord(seq=seq):
            commands.log(run_id, [("system", record.text(), 1)], attempt, seq=seq)
        case OutcomeRecord(seq=seq, status=status):
            if artifacts is not None:
                archive_log(commands, artifacts, run_id, attempt, seq=seq - 1)
            if status == "completed":
                commands.complete(run_id, summary=record.summary, exit_code=record.exit_code,
                                  attempt=attempt, seq=seq)
            elif status == "cancelled":
                commands.confirm_cancelled(run_id, record.reason, attempt, seq=seq)
            else:
                commands.fail(run_id, reason=record.reason, message=record.message,
                              exit_code=record.exit_code, attempt=attempt, seq=seq)


SPOOL_AFTER_S = 1.0
"""Records still undelivered after this long (the database slow or away) go to disk."""
CHECK_EVERY_S = 0.5
"""How often the courier reads the run back (a cancel request, an outcome recorded elsewhere)."""


class Outbox:
    """One attempt's writes, numbered, delivered in order exactly once by a courier thread of
    its own, so that the job's supervision never waits on the database.

    `put` keeps records in memory while the courier keeps up; once it can't (the database
    slow or away: SPOOL_AFTER_S), they and every later record go to the attempt's spool on
    disk, which the courier delivers from when the database answers, and removes once it has.
    The courier also reads the run back every CHECK_EVERY_S (`run`), for the supervision.
    """

    def __init__(
        self, commands: RunCommands, run_id: UUID, attempt: int, *,
        spools: SpoolsPort | None = None, artifacts: ArtifactStore | None = None,
        clock: Callable[[], float] = time.monotonic, check_every_s: float | None = CHECK_EVERY_S,
    ) -> None:
        self.commands, self.run_id, self.attempt = commands, run_id, attempt
        self.spools, self.artifacts = spools, artifacts
        self.max_bytes = spools.max_bytes if spools is not None else DEFAULT_SPOOL_MAX_BYTES
        self.clock = clock
        self.check_every_s = check_every_s
        self.seq = 0
        self.run: Run | None = None
        """The run as last read back (None until then, or while the database is away)."""
        self._cv = threading.Condition()
        self._memory: deque[Record] = deque()
        self._memory_since = 0.0
        self.spool: SpoolPort | None = None
        self._offset = 0
        self._delivered = 0
        self._inflight = 0
        self._refused: BaseException | None = None
        self._closed = False
        self._backoff = Backoff()
        self._retry_at = 0.0
        self._next_check = 0.0
        self._thread: threading.Thread | None = None

    def number(self, reserve: int = 1) -> int:
        """The next sequence number (`reserve` numbers taken, the last one returned)."""
        self.seq += reserve
        return self.seq

    def put(self, records: list[Record]) -> None:
        """Queue `records` behind those waiting (spooled if the courier is behind); raises
        what the log refused (the run moved on) or the courier's failure."""
        with self._cv:
            self._raise()
            if records:
                if not self._memory:
                    self._memory_since = self.clock()
                self._memory.extend(records)
            if self._memory and (self.spool is not None
                                 or self.clock() - self._memory_since > SPOOL_AFTER_S):
                self._to_spool()
            self._cv.notify_all()
        self._start()

    @property
    def waiting(self) -> bool:
        """Whether anything waits to be delivered."""
        with self._cv:
            return bool(self._memory) or self.spool is not None or self._inflight > 0

    def settle(self, give_up: Callable[[], bool], poll_s: float = 0.25) -> bool:
        """Wait until everything is delivered (True), or `give_up()` (False)."""
        self._start()
        with self._cv:
            while True:
                self._raise()
                if not (self._memory or self.spool is not None or self._inflight):
                    return True
                if self._memory and self.clock() - self._memory_since > SPOOL_AFTER_S:
                    self._to_spool()  # the courier is stuck on the database: make them durable
                if give_up():
                    return False
                self._cv.wait(poll_s)

    def close(self) -> None:
        """Stop the courier; what still waits stays in the spool (durable) for a SpoolFlusher."""
        with self._cv:
            self._closed = True
            if self._memory and self._refused is None:
                self._to_spool()
            if self.spool is not None:
                log.warning("run %s attempt %s: %d bytes of output wait in the worker's spool",
                            self.run_id, self.attempt, self.spool.size() - self._offset)
                self.spool.close()
                self.spool = None
            self._cv.notify_all()

    def discard(self) -> None:
        """Drop what waits (the log takes nothing more for this attempt) and stop."""
        with self._cv:
            self._closed = True
            self._memory.clear()
            if self.spool is not None:
                self.spool.delete()
                self.spool = None
            self._cv.notify_all()

    # -- the courier ----------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._courier, daemon=True,
                                            name=f"courier-{self.run_id}")
            self._thread.start()

    def _courier(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._closed or self._refused is not None:
                        return
                    record = None if self._check_due() else self._next()
                    if record is not None or self._check_due():
                        break
                    self._cv.wait(self._wait_s())
                if record is not None:
                    self._inflight = record.seq
                    spooled = self.spool is not None  # it waited: keep when it was read
            try:
                if record is not None:
                    deliver(self.commands, self.artifacts, self.run_id, self.attempt, record,
                            spooled=spooled)
                else:
                    self._next_check = self.clock() + (self.check_every_s or 0.0)
                    self.run = self.commands.load(self.run_id)
            except Exception as e:
                with self._cv:
                    self._inflight = 0
                    if not is_unavailable(e):
                        self._refused = e  # the run moved on (or a bug): supervision decides
                        self._cv.notify_all()
                        return
                    self._retry_at = self.clock() + self._backoff.next()
                    if self._memory:
                        self._to_spool()
                    log.warning("run %s: output waits for the database: %s", self.run_id, e)
                continue
            with self._cv:
                self._backoff.reset()
                if record is not None:
                    self._delivered, self._inflight = record.seq, 0
                    if self._memory and self._memory[0].seq == record.seq:
                        self._memory.popleft()
                        self._memory_since = self.clock()
                    self._settle_spool()
                self._cv.notify_all()

    def _next(self) -> Record | None:
        """The first record not yet delivered, unless a backoff runs (under the lock)."""
        if self._closed or self._refused is not None or self.clock() < self._retry_at:
            return None
        while self.spool is not None:
            frame = self.spool.read(self._offset)
            if frame is None:
                break
            try:
                record = decode(frame[0])
            except msgspec.DecodeError as e:  # can't happen to frames that passed their CRC
                log.error("run %s: a spooled record can't be read, skipped: %s", self.run_id, e)
                self._offset = frame[1]
                continue
            if record.seq > self._delivered:
                return record
            self._offset = frame[1]
        return self._memory[0] if self._memory else None

    def _settle_spool(self) -> None:
        """Remove the spool once everything in it is delivered (under the lock)."""
        if self.spool is None:
            return
        while (frame := self.spool.read(self._offset)) is not None:
            if decode(frame[0]).seq > self._delivered:
                return
            self._offset = frame[1]
        if not self._memory:
            log.info("run %s attempt %s: its spooled output is recorded", self.run_id, self.attempt)
            self.spool.delete()
            self.spool, self._offset = None, 0

    def _check_due(self) -> bool:
        return (self.check_every_s is not None and self.clock() >= self._next_check
                and self.clock() >= self._retry_at)

    def _wait_s(self) -> float:
        now = self.clock()
        waits = [max(self._retry_at - now, 0.01)] if now < self._retry_at else []
        if self.check_every_s is not None:
            waits.append(max(self._next_check - now, 0.01))
        return min(waits, default=1.0)

    def _raise(self) -> None:
        if self._refused is not None:
            raise self._refused

    # -- the spool (under the lock) ---------------------------------------------------

    def _to_spool(self) -> None:
        records = list(self._memory)
        self._memory.clear()
        frames = [encode(r) for r in records]
        if self.spool is None:
            self.spool, self._offset = self._open(), 0
        try:
            self.spool.append(frames)
            if self.spool.size() - self._offset > self.max_bytes:
                self._shrink()
        except OSError as e:  # a full or failing disk: keep them in memory rather than lose them
            log.error("run %s: the spool can't be written (%s); output waits in memory",
                      self.run_id, e)
            memory = MemorySpool(self.run_id, self.attempt)
            memory.append([f for f, _ in self.spool.frames(self._offset)])
            memory.append(frames)
            with contextlib.suppress(OSError):
                self.spool.delete()
            self.spool, self._offset = memory, 0
            if memory.size() > self.max_bytes:
                self._shrink()

    def _shrink(self) -> None:
        assert self.spool is not None
        records = [decode(f) for f, _ in self.spool.frames(self._offset)]
        after = max(self._delivered, self._inflight)
        kept = shrink([r for r in records if r.seq > self._delivered],
                      int(self.max_bytes * SHRINK_TO), after)
        log.warning("run %s: its spool is full (%d bytes): the oldest output gives way",
                    self.run_id, self.spool.size())
        self.spool.rewrite([encode(r) for r in kept])
        self._offset = 0

    def _open(self) -> SpoolPort:
        if self.spools is not None:
            try:
                return self.spools.open(self.run_id, self.attempt)
            except OSError as e:
                log.error("run %s: no spool on disk (%s); output waits in memory", self.run_id, e)
        return MemorySpool(self.run_id, self.attempt)


def replay(commands: RunCommands, artifacts: ArtifactStore | None, spool: SpoolPort) -> None:
    """Deliver a spool someone left, in order, exactly once; remove it once delivered, or
    once the log takes nothing more for its attempt. The database away: raised, spool kept."""
    run_id, attempt = spool.run_id, spool.attempt
    try:
        try:
            done = commands.load(run_id).recorded_seq(attempt)
        except RunNotFoundError:
            log.warning("spool of unknown run %s dropped", run_id)
            spool.delete()
            return
        records: list[Record] = []
        for frame, _ in spool.frames():
            try:
                records.append(decode(frame))
            except msgspec.DecodeError as e:
                log.error("run %s: a spooled record can't be read, skipped: %s", run_id, e)
        waiting = [r for r in records if r.seq > done]
        for i, record in enumerate(waiting):
            try:
                deliver(commands, artifacts, run_id, attempt, record, spooled=True)
            except (DomainError, RunNotFoundError) as e:
                log.warning("run %s attempt %s: %d spooled records not recorded, the attempt "
                            "is over (%s)", run_id, attempt, len(waiting) - i, e)
                break
        else:
            if waiting:
                log.info("run %s attempt %s: %d records left in a spool are recorded",
                         run_id, attempt, len(waiting))
        spool.delete()
    finally:
        spool.close()


class SpoolFlusher(ThreadService):
    """Delivers the spools of this worker's data dir that nobody holds, at start and then
    every ORPHAN_SCAN_S (backing off while the database is away).

    A service named `spool_flusher`: failed while spools wait for the database.
    """

    def __init__(self, commands: RunCommands, spools: SpoolsPort,
                 artifacts: ArtifactStore | None) -> None:
        super().__init__("spool_flusher", thread_name="spool-flusher")
        self.commands, self.spools, self.artifacts = commands, spools, artifacts
        self.backoff = Backoff()
        self._first_delay = 0.0

    def start(self) -> Self:
        """One pass now — before the process fails runs a crash left running, so a spooled
        outcome is recorded first — then one every ORPHAN_SCAN_S in the background."""
        try:
            done = self.flush_once()
        except Exception as e:  # never stops a worker from starting
            log.exception("spools left in the data dir could not be delivered yet")
            self.failed(e)
            done = False
        self._first_delay = ORPHAN_SCAN_S if done else self.backoff.next()
        return super().start()

    def flush_once(self) -> bool:
        """One pass over the orphaned spools; False if the database was away."""
        for spool in self.spools.orphans():
            try:
                replay(self.commands, self.artifacts, spool)
            except Exception as e:
                if not is_unavailable(e):
                    log.exception("run %s: its spool could not be delivered", spool.run_id)
                    continue
                log.warning("spools wait for the database: %s", e)
                self.failed(e)
                return False
        self.recovered()
        return True

    def run(self) -> None:
        """A pass every ORPHAN_SCAN_S until stopped, more often while the database is away."""
        delay = self._first_delay
        while not self.stopping.wait(delay):
            if self.flush_once():
                self.backoff.reset()
                delay = ORPHAN_SCAN_S
            else:
                delay = self.backoff.next()
