"""The write side in memory: the real `ControlRoom` and `RunCommands` on eventsourcing's POPO
store, and stand-ins for the ports the worker and the read models reach the world through.

Nothing here opens a socket or a file outside pytest's temp dirs: a test built from these
runs with Python alone (the fast set, `pytest -m "not postgres"`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.utils import get_topic

from controlroom.adapters.security.secretbox import AesGcmSecretBox
from controlroom.commands.application import ControlRoom
from controlroom.commands.messages import SubmitJob
from controlroom.commands.ports import Attempt, JobContext, Launch, OutputFile, PlanError
from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.runs.retry import RetryPolicy
from controlroom.domain.runs.run import Run

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
CACHED = {**POPO, "AGGREGATE_CACHE_MAXSIZE": "100", "AGGREGATE_CACHE_FASTFORWARD": "y"}
"""As a process with `CONTROLROOM_RUN_CACHE` keeps runs: in memory, fast-forwarded per use."""
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


class Clock:
    """The write side's wall clock, moved by hand; `on_read` runs on each reading (a test's
    way of acting between a command's load and its append)."""

    def __init__(self, now: datetime = EPOCH) -> None:
        self.now = now
        self.on_read: Callable[[], None] | None = None

    def __call__(self) -> datetime:
        if self.on_read is not None:
            self.on_read()
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def control_room(env: dict[str, str] = POPO) -> ControlRoom:
    """The application the service runs, on an in-memory event store."""
    return ControlRoom(env=dict(env))


def run_commands(app: ControlRoom | None = None, *, clock: Clock | None = None,
                 retry: RetryPolicy | None = None, key: str = "test-key") -> RunCommands:
    """The real command handlers over `app` (a fresh in-memory one by default)."""
    return RunCommands(app or control_room(), AesGcmSecretBox(key), clock=clock or Clock(),
                       retry=retry)


def job(**overrides: Any) -> SubmitJob:
    """A submission as the API decodes it; `overrides` replace its fields."""
    fields: dict[str, Any] = {
        "tenant_id": "tenant-a", "created_by": "alice", "job_type": "spark_etl",
        "code": {"files": [{"path": "main.py", "content": "print('hi')\n"}]},
        "spec": {"description": "a test job"}, "secrets": {}, "timeout_s": 60, "max_retries": 0,
        "labels": {}, "callbacks": {}, "job_name": "nightly", "request_hash": "hash-1",
    }
    fields.update(overrides)
    return SubmitJob(**fields)


def events(commands: RunCommands, run_id: UUID) -> list[Any]:
    """The run's stream, as stored."""
    return list(commands.app.events.get(run_id))


def names(commands: RunCommands, run_id: UUID) -> list[str]:
    return [type(e).__name__ for e in events(commands, run_id)]


def of_type(commands: RunCommands, run_id: UUID, kind: type) -> list[Any]:
    return [e for e in events(commands, run_id) if isinstance(e, kind)]


def logged(commands: RunCommands, run_id: UUID) -> str:
    """Every log chunk of the run, joined as a reader of its log sees it."""
    return "\n".join(e.text for e in of_type(commands, run_id, Run.RunLogged))


def stored_bytes(app: ControlRoom) -> bytes:
    """Everything the event store holds, as it would be written to disk."""
    notifications = app.recorder.select_notifications(start=1, limit=1_000_000)
    return b"".join(n.state for n in notifications)


def feed(app: ControlRoom, projection: Any, view: Any, cursor: Any, *, start: int = 1,
         stop: int | None = None) -> int:
    """Hand the log's events from `start` (to `stop`) to `projection` as the pipeline does —
    decoded once, filtered by the projection's topics, in one batch bound to `cursor` — and
    return the last position seen."""
    topics = set(getattr(projection, "topics", ()) or ())
    view.bind(cursor)
    last = start - 1
    for n in app.recorder.select_notifications(start=start, limit=1_000_000, stop=stop):
        last = n.id
        if topics and n.topic not in topics:
            continue
        projection.process_event(app.mapper.to_domain_event(n), Tracking(app.name, n.id))
    view.flush()
    view.bind(None)
    return last


def topic_of(cls: type) -> str:
    return get_topic(cls)


# -- the worker's ports ------------------------------------------------------------


class ScriptedJob:
    """One job process, as a test drives it: `say` lines, `exit` with a code, or hang.

    Thread-safe: the worker reads it from its thread while the test acts from its own.
    """

    def __init__(self, files: dict[str, str], launch: Launch, env: dict[str, str],
                 attempt: Attempt | None) -> None:
        self.files, self.launch, self.env, self.attempt = files, launch, env, attempt
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self._code: int | None = None
        self._ended = threading.Event()
        self.killed = threading.Event()
        self.cleaned = threading.Event()
        self.platform_failure: tuple[str, str] | None = None
        self.outputs: list[OutputFile] = []

    # what the test does
    def say(self, *lines: str, stream: str = "stdout") -> ScriptedJob:
        for line in lines:
            self._lines.put((stream, line))
        return self

    def exit(self, code: int) -> ScriptedJob:
        self._code = code
        self._ended.set()
        return self

    # the Execution port
    def lines(self, timeout: float) -> Iterator[tuple[str, str]]:
        deadline = time.monotonic() + min(timeout, 0.05)  # short: the tests wait on the worker
        while True:
            try:
                yield self._lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                return

    def poll(self) -> int | None:
        return self._code if self._ended.is_set() and self._lines.empty() else None

    def kill(self) -> None:
        self.killed.set()
        if not self._ended.is_set():
            self.exit(-9)

    def output_files(self) -> Iterator[OutputFile]:
        return iter(self.outputs)

    def cleanup(self) -> None:
        self.cleaned.set()

    def failure(self) -> tuple[str, str] | None:
        return self.platform_failure


class ScriptedExecutor:
    """Launches ScriptedJobs; `script` (if given) acts on each as it starts, before the worker
    reads it — a job that says its lines and exits at once, say. `launched` yields each job to
    a test that drives it from outside."""

    def __init__(self, script: Callable[[ScriptedJob], object] | None = None,
                 refuse: Exception | None = None) -> None:
        self.script = script
        self.refuse = refuse
        self.launched: queue.Queue[ScriptedJob] = queue.Queue()
        self.jobs: list[ScriptedJob] = []

    def launch(self, *, files: dict[str, str], launch: Launch, env: dict[str, str],
               attempt: Attempt | None = None) -> ScriptedJob:
        if self.refuse is not None:
            raise self.refuse
        job = ScriptedJob(files, launch, env, attempt)
        if self.script is not None:
            self.script(job)
        self.jobs.append(job)
        self.launched.put(job)
        return job

    def next_job(self, timeout: float = 5.0) -> ScriptedJob:
        return self.launched.get(timeout=timeout)


@dataclass
class Planner:
    """Plans every run alike: what the job type would hand the executor."""

    redact: list[str] = field(default_factory=list)
    lineage_on_success: list[tuple[str, str]] = field(default_factory=list)
    refuse: PlanError | None = None
    planned: list[JobContext] = field(default_factory=list)

    def plan(self, ctx: JobContext) -> Launch:
        self.planned.append(ctx)
        if self.refuse is not None:
            raise self.refuse
        return Launch(argv=["{python}", "main.py"], redact=list(self.redact),
                      lineage_on_success=list(self.lineage_on_success))


class Tokens:
    """Mints a recognisable run token, to see that it never reaches the log."""

    def for_run(self, tenant_id: str, run_id: UUID, ttl_s: int, *, attempt: int | None = None) -> str:
        return f"run-token-{run_id.hex}-{attempt}"


class MemoryLeases:
    """The LeaseStore port in memory, expiring on a monotonic clock of the test's choosing."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.held: dict[tuple[UUID, int], tuple[str, float]] = {}
        self.lock = threading.Lock()

    def take(self, run_id: UUID, attempt: int, worker_id: str, ttl_s: float) -> bool:
        with self.lock:
            current = self.held.get((run_id, attempt))
            if current is not None and current[0] != worker_id and current[1] > self.clock():
                return False
            self.held[(run_id, attempt)] = (worker_id, self.clock() + ttl_s)
            return True

    def renew(self, run_id: UUID, attempt: int, worker_id: str, ttl_s: float) -> bool:
        with self.lock:
            current = self.held.get((run_id, attempt))
            if current is None or current[0] != worker_id:
                return False
            self.held[(run_id, attempt)] = (worker_id, self.clock() + ttl_s)
            return True

    def release(self, run_id: UUID, attempt: int, worker_id: str) -> None:
        with self.lock:
            if self.held.get((run_id, attempt), ("",))[0] == worker_id:
                del self.held[(run_id, attempt)]

    def claim_expired(self, limit: int, grace_s: float = 0.0) -> list[tuple[UUID, int]]:
        with self.lock:
            now = self.clock()
            gone = [key for key, (_, until) in self.held.items() if until + grace_s <= now][:limit]
            for key in gone:
                del self.held[key]
            return gone

    def steal(self, run_id: UUID, attempt: int, by: str = "elsewhere") -> None:
        """Another holder takes the lease over (as after an expiry the worker missed)."""
        with self.lock:
            self.held[(run_id, attempt)] = (by, self.clock() + 3600)


@dataclass
class Queue:
    """The RunQueue port: what was sent, in order."""

    sent: list[tuple[UUID, int, datetime | None]] = field(default_factory=list)

    def enqueue(self, run_id: UUID, attempt: int, not_before: datetime | None = None) -> None:
        self.sent.append((run_id, attempt, not_before))


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return result


def in_thread(target: Callable[..., object], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def texts(items: Sequence[Any]) -> list[str]:
    return [getattr(i, "text", "") for i in items]
