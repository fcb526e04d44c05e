"""The long-running parts of a process, as services: started, stopped and reporting health alike.

A process starts its services in one place, tier by tier (what others need first), and stops
them in the reverse order in one place: the services of one tier are asked to stop together and
then waited for, so a tier stops in the time of its slowest member, not their sum.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Literal, Protocol, Self

import msgspec

log = logging.getLogger("controlroom")

State = Literal["running", "stopped", "failed"]
STOP_TIMEOUT_S = 15.0
"""How long `stop` waits for a service's thread by default."""


class Health(msgspec.Struct, frozen=True):
    """What a service reports: `failed` while its loop keeps failing (it goes on trying)."""

    name: str
    state: State
    since: datetime
    """When it entered `state`."""
    last_error: str | None = None
    """The latest error it met, kept once it recovered (None if it never met one)."""
    detail: str | None = None
    """What it is doing, where it says: "active", "standing by" for a loop under a lock."""


class Service(Protocol):
    """A long-running part of a process."""

    name: str

    def start(self) -> object:
        """Begin, in the background."""
        ...

    def request_stop(self) -> None:
        """Ask it to stop, without waiting: services stopping together stop in parallel."""
        ...

    def stop(self, timeout: float | None = None) -> None:
        """Stop it and release what it holds, waiting up to `timeout` seconds for its work."""
        ...

    def health(self) -> Health:
        """How it is doing now."""
        ...


class HealthMark:
    """The state a service reports, changed by its own loop (thread-safe)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._health = Health(name, "stopped", datetime.now(UTC))
        self._lock = threading.Lock()

    def set(self, state: State, error: BaseException | str | None = None) -> None:
        """Enter `state` (the time moves only on a change); `error` becomes the last error."""
        with self._lock:
            h = self._health
            last = h.last_error if error is None else _describe(error)
            since = h.since if state == h.state else datetime.now(UTC)
            self._health = Health(self.name, state, since, last)

    def get(self, detail: str | None = None) -> Health:
        with self._lock:
            return msgspec.structs.replace(self._health, detail=detail)


def _describe(error: BaseException | str) -> str:
    return error if isinstance(error, str) else f"{type(error).__name__}: {error}"


class ThreadService:
    """A service whose work is one loop in a thread of its own.

    Subclasses implement `run()`, which returns once `stopping` is set, keeps going through the
    errors it can outlive (reporting them with `failed()` and `recovered()`), and put what must
    happen on a stop request (`_on_stop_requested`) and once the thread ended (`_after_stop`).
    """

    stop_timeout_s = STOP_TIMEOUT_S

    def __init__(self, name: str, *, thread_name: str | None = None) -> None:
        self.name = name
        self.stopping = threading.Event()
        self._mark = HealthMark(name)
        self._thread = threading.Thread(target=self._main, name=thread_name or name, daemon=True)

    def start(self) -> Self:
        """Run the loop in the background."""
        self._mark.set("running")
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the loop to stop, without waiting."""
        self.stopping.set()
        self._on_stop_requested()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop, wait up to `timeout` seconds for it, and release what it holds."""
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout=self.stop_timeout_s if timeout is None else timeout)
        self._after_stop()
        self._mark.set("stopped")

    def health(self) -> Health:
        return self._mark.get(self._detail())

    def failed(self, error: BaseException | str) -> None:
        """The loop met an error it goes on from: report it until `recovered()`."""
        self._mark.set("failed", error)

    def recovered(self) -> None:
        """The loop works again."""
        if not self.stopping.is_set():
            self._mark.set("running")

    def run(self) -> None:
        raise NotImplementedError

    def _main(self) -> None:
        try:
            self.run()
        except Exception as e:  # a loop that ends by itself ends the service: say so
            log.exception("%s stopped by an error", self.name)
            self.failed(e)

    def _on_stop_requested(self) -> None:
        """Wake the loop where it may be waiting on something other than `stopping`."""

    def _after_stop(self) -> None:
        """Release what the loop held, once it ended (or the wait for it gave up)."""

    def _detail(self) -> str | None:
        return None


class ServiceStack:
    """A process's services: started tier by tier, stopped in the reverse order."""

    def __init__(self) -> None:
        self._tiers: list[list[Service]] = []
        self._lock = threading.Lock()

    def start(self, *services: Service) -> None:
        """Start `services`, in order, as one tier above those already started."""
        if not services:
            return
        with self._lock:
            self._tiers.append(list(services))
        for service in services:
            service.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop every tier, the last started first: each tier's services are asked to stop
        together, then waited for (up to `timeout` each) in reverse order."""
        while True:
            with self._lock:
                if not self._tiers:
                    return
                tier = self._tiers.pop()
            for service in reversed(tier):
                service.request_stop()
            for service in reversed(tier):
                try:
                    service.stop(timeout)
                except Exception:  # the others must stop all the same
                    log.exception("%s did not stop cleanly", service.name)

    def health(self) -> list[Health]:
        """Every service's health, in the order they started."""
        with self._lock:
            services = [s for tier in self._tiers for s in tier]
        return [s.health() for s in services]

    def __enter__(self) -> ServiceStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
