"""The run queue on dramatiq's RedisBroker, and the worker processes that consume it.

A message carries only the run id and the attempt; the worker loads everything else from
the log. Retries are the domain's (`max_retries=0` here) and jobs enforce their own
`timeout_s`, so dramatiq never retries or interrupts one. No global broker is set: each
DramatiqQueue owns its broker, so importing this module changes nothing in embedded mode.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Retries, TimeLimit

log = logging.getLogger("controlroom.queue")

QUEUE_NAME = "runs"
ACTOR_NAME = "execute_run"
IDLE_POLL_MS = 200
"""How long an idle consumer waits between polls of Redis: bounds pickup latency."""
REDIS_TIMEOUT_S = 10.0
"""Connect and socket timeout: a Redis that stops answering fails calls instead of hanging them."""
STOP_TIMEOUT_MS = 30_000
CHILD_RESTART_DELAY_S = 1.0
CHILD_STOP_TIMEOUT_S = 45.0
SUPERVISE_POLL_S = 0.5

Handler = Callable[[UUID, int], None]


class DramatiqQueue:
    """RunQueue on Redis; `start(handler, threads=M)` also consumes it in this process."""

    def __init__(self, redis_url: str, *, namespace: str, queue_name: str = QUEUE_NAME) -> None:
        client = redis.Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                      socket_connect_timeout=REDIS_TIMEOUT_S)
        # dramatiq leaves RedisBroker.__init__ unannotated.
        self.broker = RedisBroker(client=client, namespace=namespace,  # type: ignore[no-untyped-call]
                                  middleware=[TimeLimit(), Retries(max_retries=0)])
        self.queue_name = queue_name
        as_actor = dramatiq.actor(
            broker=self.broker, actor_name=ACTOR_NAME, queue_name=queue_name,
            max_retries=0, time_limit=float("inf"),
        )
        self.actor: dramatiq.Actor[[str, int], None] = as_actor(self._perform)
        self._handler: Handler | None = None
        self._worker: dramatiq.Worker | None = None
        self._stopping = threading.Event()

    def enqueue(self, run_id: UUID, attempt: int, not_before: datetime | None = None) -> None:
        """Send (run_id, attempt), delayed until `not_before` when that is in the future."""
        delay_ms = None
        if not_before is not None:
            delay_ms = int((not_before - datetime.now(UTC)).total_seconds() * 1000)
        self.actor.send_with_options(args=(str(run_id), attempt),
                                     delay=delay_ms if delay_ms and delay_ms > 0 else None)

    def start(self, handler: Handler, *, threads: int) -> None:
        """Consume with `threads` worker threads, each running `handler(run_id, attempt)`."""
        self._handler = handler
        self.broker.emit_after("process_boot")
        worker = dramatiq.Worker(self.broker, queues={self.queue_name}, worker_threads=threads,
                                 worker_timeout=IDLE_POLL_MS)
        # Hold no more messages than threads: a busy process must not sit on work an idle
        # process could start (dramatiq's default prefetches twice as many).
        worker.queue_prefetch = threads
        worker.start()
        self._worker = worker

    def stop_taking(self) -> None:
        """Take no more messages, without waiting: a message taken meanwhile is handed back."""
        self._stopping.set()
        if self._worker is not None:
            for thread in self._worker.workers:
                thread.stop()  # each finishes its current message, then takes no other

    def stop(self, on_stopping: Callable[[], None] = lambda: None) -> None:
        """Take no more messages, call `on_stopping` (running jobs end), then stop consuming."""
        self.stop_taking()
        if self._worker is not None:
            on_stopping()
            self._worker.stop(timeout=STOP_TIMEOUT_MS)  # re-queues prefetched messages
            self._worker = None

    def close(self) -> None:
        """Close the Redis connections."""
        self.broker.close()
        self.broker.client.connection_pool.disconnect()

    def _perform(self, run_id: str, attempt: int) -> None:
        if self._handler is None or self._stopping.is_set():
            # Taken in the instant of a shutdown: hand it back rather than start and abort it.
            self.enqueue(UUID(run_id), attempt)
            return
        self._handler(UUID(run_id), attempt)


def supervise(argv: list[str], env: dict[str, str], processes: int) -> int:
    """Run `processes` copies of a worker command; restart one that dies; SIGTERM stops all."""
    done = threading.Event()
    previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT, signal.SIGTERM)}

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)

    children = [spawn() for _ in range(processes)]
    log.info("supervising %d worker processes: %s", processes, [c.pid for c in children])
    try:
        while not done.wait(SUPERVISE_POLL_S):
            for i, child in enumerate(children):
                if child.poll() is not None:
                    log.warning("worker process %d exited with %s; restarting it",
                                child.pid, child.returncode)
                    if done.wait(CHILD_RESTART_DELAY_S):
                        break
                    children[i] = spawn()
    finally:
        _stop_all(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _stop_all(children: list[subprocess.Popen[Any]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(CHILD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("worker process %d ignored SIGTERM; killing it", child.pid)
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            child.wait()
