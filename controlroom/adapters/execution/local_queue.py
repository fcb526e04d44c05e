"""In-process run queue: a delay-aware heap drained by worker threads (embedded mode)."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

log = logging.getLogger("controlroom.queue")

Handler = Callable[[UUID, int], None]


class InProcessQueue:
    """At-most-one pending copy of each (run, attempt); `slots` threads execute them."""

    def __init__(self, handler: Handler, *, slots: int) -> None:
        self._handler = handler
        self._slots = slots
        self._heap: list[tuple[float, int, UUID, int]] = []
        self._pending: set[tuple[UUID, int]] = set()
        self._seq = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def enqueue(self, run_id: UUID, attempt: int, not_before: datetime | None = None) -> None:
        """Queue a run attempt, to start no earlier than `not_before`."""
        due = time.monotonic()
        if not_before is not None:
            due += max(0.0, (not_before - datetime.now(UTC)).total_seconds())
        with self._cond:
            if (run_id, attempt) in self._pending:
                return
            self._pending.add((run_id, attempt))
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, run_id, attempt))
            self._cond.notify()

    def start(self) -> None:
        """Start the worker threads."""
        for n in range(self._slots):
            t = threading.Thread(target=self._work, name=f"controlroom-worker-{n}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop_taking(self) -> None:
        """Take no more work, without waiting."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work; wait briefly for running jobs' threads."""
        self.stop_taking()
        for t in self._threads:
            t.join(timeout)

    def _next(self) -> tuple[UUID, int] | None:
        with self._cond:
            while not self._stopping:
                if self._heap:
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        _, _, run_id, attempt = heapq.heappop(self._heap)
                        self._pending.discard((run_id, attempt))
                        return run_id, attempt
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _work(self) -> None:
        while (item := self._next()) is not None:
            try:
                self._handler(*item)
            except Exception:
                log.exception("run %s attempt %s crashed its worker", *item)
