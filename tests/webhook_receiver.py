"""A real HTTP receiver for webhook tests: verifies every signature with `standardwebhooks`.

It listens on 127.0.0.1 in a thread, records each request (headers, body, which secrets
verify it) and answers what the test tells it to; it can go down (port closed) and come back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    verified_by: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


class Receiver:
    """Counts and verifies deliveries; `answer(received) -> status` decides each response."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.received: list[Received] = []
        self.answer: Callable[[Received], int] = lambda r: 200
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        """Listen (on the same port as before, if it had one)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                               time.time())
                got.verified_by = receiver._verify(got)
                with receiver.arrived:
                    receiver.received.append(got)
                    receiver.arrived.notify_all()
                status = receiver.answer(got)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the port: senders get connection refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _verify(self, got: Received) -> list[str]:
        ok = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(got.body, got.headers, json_parse=False)
                ok.append(secret)
            except (WebhookVerificationError, ValueError):
                pass
        return ok

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 20.0) -> list[Received]:
        """Block until `predicate(received)` holds; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not predicate(self.received):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"receiver timed out; got {len(self.received)} requests"
                self.arrived.wait(remaining)
            return list(self.received)

    def for_run(self, run_id: str) -> list[Received]:
        """Requests about one run."""
        with self.lock:
            return [r for r in self.received if r.json.get("data", {}).get("run_id") == run_id]
