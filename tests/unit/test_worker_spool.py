"""The worker's spool: what it reads of a job while the database is away survives, in order,
and is recorded exactly once.

Proven here on real files and a real (in-memory) event store: records appended to a spool
read back in order, a torn last frame is left out; a spool is one process's while held and
free once let go; a full spool drops its oldest log text behind one marker and never the
lineage or the outcome; an outbox spools while the database is away and delivers in order
once it is back; a flush cut short by a crash — even one whose last write landed unseen — is
redone by another worker with every record recorded exactly once.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from controlroom.adapters.execution.spool import FileSpools
from controlroom.commands.application import ControlRoom
from controlroom.commands.execution.spooled import (
    ArtifactsRecord,
    DroppedRecord,
    LineageRecord,
    LogRecord,
    OutcomeRecord,
    ProgressRecord,
    decode,
    encode,
    shrink,
)
from controlroom.commands.execution.writes import Outbox, SpoolFlusher, deliver, replay
from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.runs.run import Run


class OperationalError(Exception):
    """Named as psycopg's: the worker takes it for "the database is away"."""


class NoSecrets:
    def seal(self, secrets: dict[str, str]) -> str:
        return ""

    def unseal(self, sealed: str) -> dict[str, str]:
        return {}


class Flaky(RunCommands):
    """Real commands on a real event store, with the database taken away at will.

    `away`: every write fails before it reaches the log. `lands_unseen`: the next write is
    committed, then fails as a connection cut before the answer would.
    """

    def __init__(self, app: ControlRoom) -> None:
        super().__init__(app, NoSecrets())
        self.away = False
        self.lands_unseen = False

    def _update(self, tenant_id: str | None, run_id: UUID, decide: Any) -> int:
        if self.away:
            raise OperationalError("connection refused")
        position = super()._update(tenant_id, run_id, decide)
        if self.lands_unseen:
            self.lands_unseen, self.away = False, True
            raise OperationalError("server closed the connection unexpectedly")
        return position


def running_run(commands: RunCommands) -> UUID:
    run_id = uuid4()
    commands.app.save(Run.submit(
        run_id=run_id, tenant_id="t", job_type="spark_etl", created_by="alice",
        code={"files": []}, spec={}, sealed_secrets=None, timeout_s=60, max_retries=0,
        labels={}, callbacks={}, idempotency_key=None, request_hash="h", job_name="job",
        submitted_at=datetime(2024, 1, 1, tzinfo=UTC)))
    commands.start(run_id, 1, "w1")
    return run_id


def events(commands: RunCommands, run_id: UUID) -> list[Any]:
    return list(commands.app.events.get(run_id))


def log_lines(commands: RunCommands, run_id: UUID) -> list[str]:
    return [line for e in events(commands, run_id) if isinstance(e, Run.RunLogged)
            for line in e.text.split("\n")]


def job_output(outbox: Outbox, n: int) -> list[Any]:
    """What a job printing `n` lines, each with a progress step, is recorded as."""
    records: list[Any] = []
    for i in range(n):
        records.append(LogRecord(outbox.number(), 1.0 + i, [("stdout", f"line {i}", 1)]))
        records.append(ProgressRecord(outbox.number(), 1.0 + i, 100.0 * i / n, ""))
    return records


def test_records_read_back_in_order_and_a_torn_tail_is_left_out(tmp_path: Path) -> None:
    spools = FileSpools(tmp_path)
    run_id = uuid4()
    spool = spools.open(run_id, 1)
    records = [LogRecord(i, float(i), [("stdout", f"line {i}", 1)]) for i in range(1, 101)]
    spool.append([encode(r) for r in records[:50]])
    spool.append([encode(r) for r in records[50:]])
    assert [decode(f) for f, _ in spool.frames()] == records
    offsets = [end for _, end in spool.frames()]
    assert [decode(f) for f, _ in spool.frames(offsets[9])] == records[10:]
    spool.close()
    path = tmp_path / f"{run_id}.1.spool"
    with open(path, "ab") as f:  # a crash in the middle of the next append
        f.write(b"\x00\x00\x10\x00garbage")
    [again] = list(spools.orphans())
    assert [decode(f) for f, _ in again.frames()] == records
    again.append([encode(LogRecord(101, 101.0, [("stdout", "after", 1)]))])
    assert decode(list(again.frames())[-1][0]) == LogRecord(101, 101.0, [("stdout", "after", 1)])
    again.close()


def test_a_held_spool_is_nobody_elses_and_a_released_one_is_anyones(tmp_path: Path) -> None:
    spools = FileSpools(tmp_path)
    held = spools.open(uuid4(), 1)
    held.append([encode(LogRecord(1, 1.0, [("stdout", "x", 1)]))])
    left = spools.open(uuid4(), 2)
    left.append([encode(LogRecord(1, 1.0, [("stdout", "y", 1)]))])
    left.close()
    [taken] = spools.orphans()
    assert (taken.run_id, taken.attempt) == (left.run_id, 2)
    assert not list(spools.orphans())  # taken now
    taken.close()
    pid = os.fork()
    if pid == 0:  # another worker process on the same data dir: it may not take `held`
        found = [s.run_id for s in FileSpools(tmp_path).orphans()]
        os._exit(0 if found == [left.run_id] else 1)
    assert os.waitpid(pid, 0)[1] == 0
    held.close()
    assert len(list(spools.orphans())) == 2


def test_a_full_spool_drops_its_oldest_output_behind_one_marker_never_the_outcome() -> None:
    records: list[Any] = [LineageRecord(1, 0.0, [("a.in", "a.out")])]
    records += [LogRecord(i, float(i), [("stdout", f"{i:04d}" + "x" * 95, 1)])
                for i in range(2, 1002)]
    records += [ProgressRecord(1002, 0.0, 50.0, "half"), OutcomeRecord(1004, "completed")]
    kept = shrink(records, 20_000)
    assert sum(len(encode(r)) for r in kept) <= 20_000
    assert kept[0] == records[0]  # lineage: never dropped
    marker = kept[1]
    assert isinstance(marker, DroppedRecord) and marker.seq == 1 + marker.lines  # the last dropped
    assert [r.seq for r in kept] == sorted({r.seq for r in kept})  # numbers keep rising
    tail = [r for r in kept[2:] if isinstance(r, LogRecord)]
    assert marker.lines == 1000 - len(tail) and marker.size == 99 * marker.lines
    assert tail == records[1001 - len(tail):1001]  # the newest output, in order
    assert kept[-2:] == records[-2:]
    assert "dropped" in marker.text()
    again = shrink([*kept[:2], *kept[2:5], LogRecord(2000, 0.0, [("stdout", "z" * 30_000, 1)])],
                   20_000)
    assert isinstance(again[1], DroppedRecord) and again[1].lines > marker.lines  # counts add up
    # Records that may be on their way to the log (numbered up to `after`) stay.
    assert shrink(records, 20_000, after=500)[:500] == records[:500]


def spooled_while_away(outbox: Outbox, tmp_path: Path) -> None:
    """Wait until the outbox found the database away and went to disk."""
    deadline = time.monotonic() + 5
    while outbox.spool is None or not list(tmp_path.glob("*.spool")):
        assert time.monotonic() < deadline, "nothing was spooled"
        time.sleep(0.01)


def settled(outbox: Outbox) -> None:
    assert outbox.settle(lambda: False)
    outbox.close()


def test_a_full_outbox_spool_stays_within_its_cap_and_the_log_says_what_went(tmp_path: Path) -> None:
    commands = Flaky(ControlRoom())
    run_id = running_run(commands)
    spools = FileSpools(tmp_path, max_bytes=50_000)
    outbox = Outbox(commands, run_id, 1, spools=spools, check_every_s=None)
    commands.away = True
    outbox.put([LogRecord(outbox.number(), 0.0, [("stdout", "000 " + "y" * 400, 1)])])
    spooled_while_away(outbox, tmp_path)
    for i in range(1, 300):
        outbox.put([LogRecord(outbox.number(), float(i), [("stdout", f"{i:03d} " + "y" * 400, 1)])])
        assert outbox.spool is not None and outbox.spool.size() <= 50_000 + 500
    outbox.put([OutcomeRecord(outbox.number(2), "completed", summary="ok", exit_code=0)])
    commands.away = False
    settled(outbox)
    lines = log_lines(commands, run_id)
    assert "dropped here" in lines[0]
    numbers = [int(line[:3]) for line in lines[1:]]
    assert numbers == list(range(300 - len(numbers), 300))
    assert commands.load(run_id).status == "completed"
    assert not list(tmp_path.iterdir())


def test_the_outbox_spools_while_the_database_is_away_and_delivers_in_order(tmp_path: Path) -> None:
    commands = Flaky(ControlRoom())
    run_id = running_run(commands)
    outbox = Outbox(commands, run_id, 1, spools=FileSpools(tmp_path), check_every_s=None)
    records = job_output(outbox, 30)
    outbox.put(records[:10])  # the database answers: straight to the log
    assert outbox.settle(lambda: False)
    assert not list(tmp_path.iterdir())
    commands.away = True
    outbox.put(records[10:])
    spooled_while_away(outbox, tmp_path)
    outbox.put([OutcomeRecord(outbox.number(2), "failed", reason="exit_code", message="boom",
                              exit_code=3)])
    assert outbox.waiting and len(list(tmp_path.iterdir())) == 1
    assert not outbox.settle(lambda: True)
    assert commands.load(run_id).status == "running"
    commands.away = False
    settled(outbox)
    assert log_lines(commands, run_id) == [f"line {i}" for i in range(30)]
    failed = [e for e in events(commands, run_id) if isinstance(e, Run.RunFailed)]
    assert [(e.reason, e.exit_code) for e in failed] == [("exit_code", 3)]
    spooled = [e for e in events(commands, run_id) if isinstance(e, Run.RunLogged)][5:]
    assert all(e.reported_at is not None for e in spooled)  # the time the line was read
    assert not list(tmp_path.iterdir())


def test_a_flush_cut_short_by_a_crash_is_redone_by_another_worker_exactly_once(
        tmp_path: Path) -> None:
    commands = Flaky(ControlRoom())
    run_id = running_run(commands)
    outbox = Outbox(commands, run_id, 1, spools=FileSpools(tmp_path), check_every_s=None)
    commands.away = True
    outbox.put(job_output(outbox, 20))
    spooled_while_away(outbox, tmp_path)
    outbox.put([OutcomeRecord(outbox.number(2), "completed", summary="exited with code 0",
                              exit_code=0)])
    # The database returns; seven records are recorded, the eighth commits but its answer is
    # lost in a connection cut, and the worker dies before it learns more.
    delivered = 0
    original = commands._update

    def cut_after_seven(tenant_id: str | None, run_id: UUID, decide: Any) -> int:
        nonlocal delivered
        if not commands.away:
            delivered += 1
            commands.lands_unseen = delivered == 8
        return original(tenant_id, run_id, decide)

    commands._update = cut_after_seven  # type: ignore[method-assign]
    commands.away = False
    deadline = time.monotonic() + 10
    while not (delivered == 8 and commands.away):
        assert time.monotonic() < deadline, delivered
        time.sleep(0.01)
    outbox.close()  # the worker process is gone
    assert outbox._thread is not None
    outbox._thread.join(5)
    assert len(log_lines(commands, run_id)) == 4  # records 1-8: four lines, four progress steps
    commands._update = original  # type: ignore[method-assign]
    commands.away = False

    flusher = SpoolFlusher(commands, FileSpools(tmp_path), None)
    assert flusher.flush_once()
    assert log_lines(commands, run_id) == [f"line {i}" for i in range(20)]
    progress = [e for e in events(commands, run_id) if isinstance(e, Run.RunProgressed)]
    assert [e.percent for e in progress] == [100.0 * i / 20 for i in range(20)]
    assert commands.load(run_id).status == "completed"
    assert not list(tmp_path.iterdir())
    # The same spool delivered once more (a copy a crash left behind): nothing changes.
    spool = FileSpools(tmp_path).open(run_id, 1)
    spool.append([encode(r) for r in job_output(Outbox(commands, run_id, 1), 20)])
    before = len(events(commands, run_id))
    replay(commands, None, spool)
    assert len(events(commands, run_id)) == before
    # And the log itself refuses a repeat, whoever sends it.
    deliver(commands, None, run_id, 1, LogRecord(5, 0.0, [("stdout", "line 2", 1)]), spooled=True)
    deliver(commands, None, run_id, 1, OutcomeRecord(42, "completed", exit_code=0), spooled=True)
    assert len(events(commands, run_id)) == before


def test_a_write_of_several_events_is_recorded_whole_and_once() -> None:
    commands = Flaky(ControlRoom())
    run_id = running_run(commands)
    big = "\n".join(f"{i:04d}" + "b" * 1000 for i in range(300))  # ~300 KB: several log events
    edges = [("in.a", "out.x"), ("in.b", "out.x"), ("in.c", "out.y")]
    artifacts = [{"artifact_id": str(uuid4()), "path": f"f{i}.txt", "size": 1, "sha256": "0" * 64,
                  "content_type": "text/plain", "attempt": 1} for i in range(3)]
    records: list[Any] = [LogRecord(1, 0.0, [("stdout", big, 300)]), LineageRecord(2, 0.0, edges),
                          ArtifactsRecord(3, artifacts)]
    for _ in range(2):  # the second time: a repeat, recorded already
        for record in records:
            deliver(commands, None, run_id, 1, record, spooled=False)
    assert log_lines(commands, run_id) == big.split("\n")
    assert len([e for e in events(commands, run_id) if isinstance(e, Run.RunLogged)]) > 1
    recorded = [(e.source, e.target) for e in events(commands, run_id)
                if isinstance(e, Run.LineageEdgeRecorded)]
    assert recorded == edges
    added = [e.artifact["path"] for e in events(commands, run_id) if isinstance(e, Run.ArtifactAdded)]
    assert added == ["f0.txt", "f1.txt", "f2.txt"]
    assert commands.load(run_id).recorded_seq(1) == 3
