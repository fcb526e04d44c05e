"""A real pgbouncer in transaction mode in front of a test database (a stand-in for
Supabase's transaction pooler, and a database link the tests can cut)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg

from tests.live_events import free_port

PGBOUNCER = shutil.which("pgbouncer", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
START_TIMEOUT_S = 10.0


class Pgbouncer:
    """pgbouncer on a free loopback port, forwarding to the server of `direct`."""

    def __init__(self, direct: str) -> None:
        assert PGBOUNCER, "pgbouncer is not installed"
        parts = urlsplit(direct)
        user = parts.username or "postgres"
        self.port = free_port()
        self.dsn = parts._replace(netloc=f"{user}@127.0.0.1:{self.port}").geturl()
        self.conf_dir = Path(tempfile.mkdtemp(prefix="controlroom-pgbouncer-"))
        self.conf_dir.chmod(0o755)
        # Its clients are trusted; it logs in to the server with the direct DSN's password.
        (self.conf_dir / "users.txt").write_text(f'"{user}" "{unquote(parts.password or "")}"\n')
        (self.conf_dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={parts.hostname} port={parts.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.conf_dir}/users.txt\n"
            "pool_mode = transaction\ndefault_pool_size = 3\nmax_client_conn = 200\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
        )
        for f in self.conf_dir.iterdir():
            f.chmod(0o644)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        cmd = [str(PGBOUNCER), str(self.conf_dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            cmd[1:1] = ["-u", "nobody"]  # pgbouncer refuses to run as root
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                    raise RuntimeError(f"pgbouncer did not start: {out}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Cut every connection through it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def close(self) -> None:
        """Stop and remove its files."""
        self.stop()
        shutil.rmtree(self.conf_dir, ignore_errors=True)
