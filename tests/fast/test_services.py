"""Services start, report their health, and stop in the reverse order they started."""

from __future__ import annotations

import threading

from controlroom.services import Health, ServiceStack, ThreadService


class Loop(ThreadService):
    """Fails `failures` times, then runs until stopped."""

    def __init__(self, name: str, log: list[str], failures: int = 0) -> None:
        super().__init__(name)
        self.log, self.failures = log, failures
        self.working = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            if self.failures:
                self.failures -= 1
                self.failed(RuntimeError("database away"))
                self.stopping.wait(0.01)
                continue
            self.recovered()
            self.working.set()
            self.stopping.wait(1.0)

    def _on_stop_requested(self) -> None:
        self.log.append(f"request_stop {self.name}")

    def _after_stop(self) -> None:
        self.log.append(f"stopped {self.name}")


def test_a_loop_reports_failures_and_keeps_the_last_error_once_it_recovers() -> None:
    loop = Loop("reaper", [], failures=2)
    assert loop.health().state == "stopped"
    loop.start()
    assert loop.working.wait(5)
    health = loop.health()
    assert (health.name, health.state) == ("reaper", "running")
    assert health.last_error == "RuntimeError: database away"
    loop.stop(timeout=5)
    assert loop.health().state == "stopped"


def test_a_loop_that_ends_by_an_error_is_failed() -> None:
    class Broken(ThreadService):
        def run(self) -> None:
            raise ValueError("bad")

    broken = Broken("broken").start()
    broken._thread.join(5)
    assert broken.health().state == "failed"
    assert broken.health().last_error == "ValueError: bad"


def test_tiers_stop_in_reverse_order_each_asked_together_first() -> None:
    log: list[str] = []
    stack = ServiceStack()
    session = Loop("session", log)
    a, b, worker = Loop("a", log), Loop("b", log), Loop("worker", log)
    with stack:
        stack.start(session)
        stack.start(a, b)
        stack.start(worker)
        assert [h.name for h in stack.health()] == ["session", "a", "b", "worker"]
        assert all(isinstance(h, Health) and h.state == "running" for h in stack.health())
    assert log == [
        "request_stop worker", "request_stop worker", "stopped worker",
        "request_stop b", "request_stop a", "request_stop b", "stopped b",
        "request_stop a", "stopped a",
        "request_stop session", "request_stop session", "stopped session",
    ]
    assert stack.health() == []
