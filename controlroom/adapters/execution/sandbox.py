"""Starts local jobs through the sandbox launcher (controlroom/runners/sandbox.py, docs/sandbox.md).

The worker writes the launcher's configuration into a pipe; the launcher builds the
namespaces, the job's root and its limits, and execs the job. As root each attempt runs as
a uid of its own from the pool; as a user, inside a user namespace mapping that user.
"""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from controlroom.adapters.execution.uids import JobUid, JobUids
from controlroom.settings import SandboxSettings

LAUNCHER = Path(__file__).resolve().parents[2] / "runners" / "sandbox.py"
_RUN_LAUNCHER = (f"import sys; sys.path[:0] = [{str(LAUNCHER.parent)!r}]; import {LAUNCHER.stem}; "
                 f"{LAUNCHER.stem}.main()")
"""Imported rather than run as a script, so its compiled bytecode is cached."""
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
"""What every job sees read-only, beside the Python prefixes and configured paths."""
NETWORK_ENV = ("CONTROLROOM_URL", "CONTROLROOM_TOKEN")
"""Useless without a network: the SDK then reports through its printed control lines."""
PROBE_TIMEOUT_S = 30.0


class Sandbox:
    """How local jobs are confined: their ids, visible paths, network and limits."""

    def __init__(self, settings: SandboxSettings, python: str = sys.executable) -> None:
        self.settings = settings
        self.python = python
        self.uids = JobUids(settings.uid_base, settings.uid_count) if os.geteuid() == 0 else None

    def network(self, requested: str | None = None) -> bool:
        """Whether a job shares the host's network: never if the operator or the run cut it."""
        return self.settings.network != "none" and requested != "none"

    def readonly_paths(self) -> list[str]:
        """Host paths a job sees read-only: system dirs, the Python prefixes, configured paths."""
        return [*SYSTEM_PATHS, sys.base_prefix, sys.prefix, *self.settings.readonly_paths]

    def exposing(self, path: Path) -> str | None:
        """The read-only path through which jobs would see `path`, if any."""
        target = path.resolve()
        for shown in self.readonly_paths():
            base = Path(shown).resolve()
            if target == base or base in target.parents:
                return shown
        return None

    def limits(self) -> dict[str, int]:
        """The rlimits each job process gets, by the launcher's names."""
        s = self.settings
        return {"as": s.memory_bytes, "cpu": s.cpu_s, "nproc": s.max_processes,
                "nofile": s.max_open_files, "fsize": s.max_file_bytes}

    def lease(self) -> JobUid | None:
        """A uid for one attempt (as root), else None: the job keeps ours."""
        return self.uids.acquire() if self.uids is not None else None

    def job_env(self, env: dict[str, str], network: bool = True) -> dict[str, str]:
        """The job's environment as it is inside: its own /tmp, no API without a network."""
        env = {**env, "TMPDIR": "/tmp"}
        if not network:
            for name in NETWORK_ENV:
                env.pop(name, None)
        return env

    def start(
        self, argv: list[str], env: dict[str, str], *, workdir: Path, root: Path,
        uid: JobUid | None, preexec_fn: Callable[[], None] | None = None, network: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` sandboxed in `workdir` (chowned to `uid`), mounting its root on `root`."""
        if uid is not None:
            _chown_tree(workdir, uid.uid, uid.gid)
        config = {
            "argv": argv, "env": env, "workdir": str(workdir), "root": str(root),
            "uid": None if uid is None else uid.uid, "gid": None if uid is None else uid.gid,
            "network": network, "readonly": self.readonly_paths(),
            "tmp_bytes": self.settings.tmp_bytes, "limits": self.limits(),
        }
        read_end, write_end = os.pipe()
        try:
            proc = subprocess.Popen(
                # -I -S: no site-packages, no environment: the launcher starts in milliseconds
                [self.python, "-I", "-S", "-c", _RUN_LAUNCHER, str(read_end)],
                pass_fds=(read_end,), env={}, cwd="/", stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True, preexec_fn=preexec_fn,
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        # A thread: a configuration larger than the pipe must not block the caller.
        threading.Thread(target=_send, args=(write_end, marshal.dumps(config)),
                         daemon=True).start()
        return proc

    def probe(self) -> str | None:
        """None if a job can be started sandboxed on this host, else why not."""
        if sys.platform != "linux":
            return f"job sandboxing needs Linux namespaces (this is {sys.platform})"
        scratch = Path(tempfile.mkdtemp(prefix="controlroom-probe-"))
        uid: JobUid | None = None
        try:
            uid = self.lease()
            (scratch / "work").mkdir()
            (scratch / "root").mkdir()
            proc = self.start([self.python, "-I", "-S", "-c", "pass"], {}, workdir=scratch / "work",
                              root=scratch / "root", uid=uid, network=self.network())
            try:
                _, err = proc.communicate(timeout=PROBE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                return "starting a sandboxed job timed out"
            if proc.returncode != 0:
                reason = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
                return f"a sandboxed test job failed (exit {proc.returncode}): {reason[0]}"
            return None
        except OSError as e:
            return f"could not start a sandboxed test job: {e}"
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            if uid is not None:
                uid.release()


def _send(fd: int, data: bytes) -> None:
    try:
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(data)
    except BrokenPipeError:
        pass  # the launcher died first: its exit code says so


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    """Give the job's uid its working dir and the files written there for it."""
    os.lchown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), uid, gid)
