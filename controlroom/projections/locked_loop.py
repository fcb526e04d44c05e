"""Keeps a background loop running in exactly one process: the holder of its advisory lock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controlroom.services import ThreadService

if TYPE_CHECKING:
    from controlroom.projections.session import LockSession

log = logging.getLogger("controlroom.projections")

STANDBY_RETRY_S = 2.0
RESTART_BACKOFF_S = 1.0


class LockedLoopHost(ThreadService):
    """Runs `make_runner()` while holding the lock named `name`; restarts it after errors.

    For background loops that must run in one process at a time (the reaper, the webhook
    deliverer); read models are hosted by the pipeline (pipeline.py) under the same kind
    of locks, all taken on the process's one session (session.py). A runner has
    `run_forever(timeout)`, `is_interrupted` and is a context manager.

    A service named after its lock: `active` in the process that holds it, `standing by` in
    the others; failed while its runner keeps failing.
    """

    def __init__(self, name: str, session: LockSession, make_runner: Callable[[], Any]) -> None:
        super().__init__(name, thread_name=f"host-{name}")
        self.session = session
        self.make_runner = make_runner
        self.active = threading.Event()
        self.runner: Any = None

    def _on_stop_requested(self) -> None:
        runner = self.runner
        if isinstance(event := getattr(runner, "is_interrupted", None), threading.Event):
            event.set()

    def _after_stop(self) -> None:
        self.session.unlock(self.name)

    def _detail(self) -> str:
        return "active" if self.active.is_set() else "standing by"

    def run(self) -> None:
        """Take the lock when it is free and run the runner while it is held, until stopped."""
        while not self.stopping.is_set():
            try:
                generation = self.session.try_lock(self.name)
                if generation is not None:
                    self._serve(generation)
            except Exception as e:
                log.warning("%s interrupted: %s", self.name, e)
                self.failed(e)
            self.active.clear()
            self.stopping.wait(STANDBY_RETRY_S)

    def _serve(self, generation: int) -> None:
        try:
            while not self.stopping.is_set() and self.session.holds(self.name, generation):
                self._run(generation)
        finally:
            self.runner = None
            self.stopping.wait(RESTART_BACKOFF_S)

    def _run(self, generation: int) -> None:
        """Run until stopped, or until the lock is lost with its session."""
        with self.make_runner() as runner:
            self.runner = runner
            self.active.set()
            self.recovered()
            log.info("%s: active", self.name)
            while not self.stopping.is_set():
                runner.run_forever(timeout=1.0)
                if runner.is_interrupted.is_set():
                    if self.stopping.is_set():
                        return  # stopped by request_stop
                    raise RuntimeError("runner stopped")
                if not self.session.holds(self.name, generation):
                    log.warning("%s: lock lost; standing by", self.name)
                    return
