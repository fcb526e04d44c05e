"""Test helpers for live events: a minimal SSE reader, the app served in a thread, and the
real `controlroom serve` process on a test database.

The SSE reader here is written from the spec independently of `controlroom.client`, so the
server is not only tested through the client's own parsing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


@dataclass
class Message:
    """One SSE message (or a comment, with `comment` set and no event)."""

    event: str = "message"
    id: str | None = None
    data: str = ""
    comment: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class _Pending:
    event: str = ""
    id: str | None = None
    data: list[str] = field(default_factory=list)
    retry: int | None = None


def parse(lines: Iterable[str]) -> Iterator[Message]:
    """SSE messages from the response's lines (comments too, so heartbeats can be seen)."""
    pending = _Pending()
    for line in lines:
        if line == "":
            if pending.data or pending.id is not None or pending.event:
                yield Message(pending.event or "message", pending.id, "\n".join(pending.data),
                              retry=pending.retry)
            pending = _Pending()
            continue
        if line.startswith(":"):
            yield Message(event="", comment=line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            pending.data.append(value)
        elif name == "event":
            pending.event = value
        elif name == "id":
            pending.id = value
        elif name == "retry" and value.isdigit():
            pending.retry = int(value)


@contextlib.contextmanager
def sse(client: httpx.Client, path: str, headers: dict[str, str], *,
        last_event_id: str | None = None, timeout: float = 30.0) -> Iterator[Iterator[Message]]:
    """Open an SSE stream; yields an iterator of its messages."""
    h = {**headers, "Accept": "text/event-stream"}
    if last_event_id is not None:
        h["Last-Event-ID"] = last_event_id
    with client.stream("GET", path, headers=h, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read().decode()
        assert resp.headers["content-type"].startswith("text/event-stream")
        yield parse(resp.iter_lines())


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serve_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve `app` with uvicorn on `port` (else a free one) in a thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(Exception):  # end open streams, as `controlroom serve` does
            app.state.deps.events.close()
        server.should_exit = True
        thread.join(timeout=10)


class ServeProcess:
    """`controlroom serve` as a subprocess on an external test database."""

    def __init__(self, database_url: str, data_dir: Path, *, jwt_secret: str,
                 extra_args: Iterable[str] = (), env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"serve-{self.port}.log"
        environ = {k: v for k, v in os.environ.items()
                   if k != "REDIS_URL" and not k.startswith("CONTROLROOM_")}
        environ.update({"DATABASE_URL": database_url, "CONTROLROOM_DATA_DIR": str(data_dir),
                        "CONTROLROOM_JWT_SECRET": jwt_secret, "PYTHONUNBUFFERED": "1",
                        **(env or {})})
        cmd = [sys.executable, "-m", "controlroom.cli", "serve", "--port", str(self.port),
               *extra_args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=environ, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        """What the server printed, for assertion messages."""
        return f"\n--- serve (exit {self.proc.poll()}) ---\n" + \
            self.log_path.read_text(errors="replace")[-8000:]

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> ServeProcess:
        """Block until /readyz answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "controlroom serve exited" + self.output()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        raise AssertionError("controlroom serve did not become ready" + self.output())

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL the whole process group if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode
