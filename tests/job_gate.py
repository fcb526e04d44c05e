"""A gate a running job waits at, over loopback TCP: a sandboxed job sees none of the host's
files, so tests can't hand it marker files; it shares the host's network by default."""

from __future__ import annotations

import socket

GATE_WAIT_S = 30


class JobGate:
    """The job connects, sends one line (e.g. its token), and waits until the test opens."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(GATE_WAIT_S)
        self.port: int = self._server.getsockname()[1]
        self._conn: socket.socket | None = None

    def source(self, send: str = "''") -> str:
        """Job code: connect, send the value of expression `send`, wait for the gate."""
        return (
            "import socket as _socket\n"
            f"_gate = _socket.create_connection(('127.0.0.1', {self.port}), timeout={GATE_WAIT_S})\n"
            f"_gate.sendall((str({send}) + '\\n').encode())\n"
            "try:\n    _gate.recv(1)\nexcept OSError:\n    pass\n"
        )

    def arrived(self) -> str:
        """Wait for the job to reach the gate; what it sent."""
        self._conn, _ = self._server.accept()
        self._conn.settimeout(GATE_WAIT_S)
        data = b""
        while not data.endswith(b"\n"):
            chunk = self._conn.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.decode().rstrip("\n")

    def open(self) -> None:
        """Let the job go on (once it has arrived)."""
        if self._conn is None:
            self.arrived()
        assert self._conn is not None
        self._conn.sendall(b"g")

    def __enter__(self) -> JobGate:
        """The gate itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close it."""
        self.close()

    def close(self) -> None:
        """Release whoever waits and stop listening."""
        for s in (self._conn, self._server):
            if s is not None:
                s.close()

