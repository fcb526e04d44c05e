"""A PostgreSQL 15 cluster of a test's own (Debian's binaries), stopped and started at will on
the same data dir and port, so clients see a real database restart."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

BIN = Path("/usr/lib/postgresql/15/bin")
MISSING = f"PostgreSQL 15 binaries not found under {BIN} (Debian's postgresql-15 package)"


def available() -> bool:
    return all((BIN / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))


class Cluster:
    """initdb into a temp dir; as root, the server runs as `nobody` (postgres refuses root)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="controlroom-pg15-"))
        self.pgdata = self.root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("nobody")
            self._as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}
        self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-instructions")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run("pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= "
                  "-c max_connections=100 -c fsync=off")

    def stop(self) -> None:
        """Fast shutdown: every client's connection is cut, as in a database restart."""
        self._run("pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60")

    def remove(self) -> None:
        subprocess.run([str(BIN / "pg_ctl"), "stop", "-D", str(self.pgdata), "-m", "immediate"],
                       env=self._env, capture_output=True, check=False, **self._as)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        proc = subprocess.run([str(BIN / tool), *args], cwd=self.root, env=self._env,
                              capture_output=True, text=True, timeout=120, check=False, **self._as)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
