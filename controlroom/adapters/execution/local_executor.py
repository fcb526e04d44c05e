"""Runs a job's entrypoint as a local subprocess in its own temp dir and process group.

With a Sandbox (the default wiring on hosts that can sandbox) each attempt runs confined
(adapters/execution/sandbox.py, docs/sandbox.md); without one, as the worker's own user.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from controlroom.adapters.execution.sandbox import Sandbox
from controlroom.adapters.execution.uids import JobUid
from controlroom.commands.ports import PYTHON, Attempt, Launch, OutputFile, PlanError

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_worker() -> None:
    """In the child: SIGKILL us if the worker dies, so a crashed worker leaves no orphan job
    running beside the retry the reaper schedules (Linux; elsewhere the lease fencing remains)."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

MAX_LINE_CHARS = 64 * 1024
KILL_GRACE_S = 2.0
ORPHAN_PIPE_GRACE_S = 2.0
PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT")
"""Only these reach a job from the server's environment: never its credentials."""

_EOF = ("", None)


class LocalExecution:
    """A job process whose stdout/stderr lines are read by two threads."""

    def __init__(self, proc: subprocess.Popen[bytes], workdir: Path, *,
                 scratch: Path | None = None, uid: JobUid | None = None) -> None:
        self.proc = proc
        self.workdir = workdir
        self.scratch = scratch or workdir
        self.uid = uid
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._open_streams = 2
        self._exited_at: float | None = None
        for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            assert stream is not None
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

    def _read(self, name: str, stream: IO[bytes]) -> None:
        with stream:
            for raw in stream:
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                self._lines.put((name, text[:MAX_LINE_CHARS]))
        self._lines.put(_EOF)

    def lines(self, timeout: float) -> Iterator[tuple[str, str]]:
        """Lines produced until `timeout` passes or both streams close."""
        deadline = time.monotonic() + timeout
        while self._open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                stream, text = self._lines.get(timeout=remaining)
            except queue.Empty:
                return
            if text is None:
                self._open_streams -= 1
                continue
            yield stream, text

    def poll(self) -> int | None:
        """The exit code once the process ended and its output was read.

        A descendant that escaped the process group may hold the pipes open forever; after
        a short grace its output is abandoned rather than blocking the run.
        """
        code = self.proc.poll()
        if code is None or not self._open_streams:
            return code
        if self._exited_at is None:
            self._exited_at = time.monotonic()
        return code if time.monotonic() - self._exited_at > ORPHAN_PIPE_GRACE_S else None

    def exited(self) -> bool:
        """Whether the job's process has ended (output perhaps still unread); thread-safe."""
        return self.proc.poll() is not None

    def kill(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left of it."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=KILL_GRACE_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def output_files(self) -> Iterator[OutputFile]:
        """Regular files under `output/`, sorted; symlinks and special files are skipped."""
        root = self.workdir / "output"
        if root.is_symlink() or not root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield OutputFile(path.relative_to(root).as_posix(), path, st.st_size)

    def cleanup(self) -> None:
        """Remove the job's working directory, then free its uid (which then owns nothing)."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self.uid is not None:
            self.uid.release()

    def failure(self) -> None:
        """None: a local process always ends with an exit code of its own."""
        return None


class LocalExecutor:
    """Launches Python entrypoints with the worker's own interpreter, sandboxed if it has one."""

    def __init__(self, python: str = sys.executable, sandbox: Sandbox | None = None) -> None:
        self.python = python
        self.sandbox = sandbox

    def launch(
        self, *, files: dict[str, str], launch: Launch, env: dict[str, str],
        attempt: Attempt | None = None,
    ) -> LocalExecution:
        """Write `files` into a fresh temp dir and start the launch's command there."""
        # <scratch>/work is the job's; <scratch>/root is where a sandbox mounts its root.
        scratch = Path(tempfile.mkdtemp(prefix="controlroom-run-"))
        workdir = scratch / "work"
        uid: JobUid | None = None
        try:
            workdir.mkdir(mode=0o700)
            for rel, content in files.items():
                target = workdir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            output = workdir / "output"
            output.mkdir(exist_ok=True)
            base = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
            argv = [self.python if arg == PYTHON else arg for arg in launch.argv]
            job_env = {**base, "HOME": str(workdir), "PYTHONUNBUFFERED": "1",
                       "CONTROLROOM_OUTPUT_DIR": str(output), **launch.env, **env}
            requested = attempt.network if attempt is not None else None
            if self.sandbox is not None:
                (scratch / "root").mkdir()
                uid = self.sandbox.lease()
                network = self.sandbox.network(requested)
                proc = self.sandbox.start(argv, self.sandbox.job_env(job_env, network),
                                          workdir=workdir, root=scratch / "root", uid=uid,
                                          preexec_fn=_die_with_worker, network=network)
            elif requested == "none":
                raise PlanError("network_unavailable", "spec.network 'none' needs the job "
                                "sandbox, which this worker's host can't provide")
            else:
                proc = subprocess.Popen(
                    argv, cwd=workdir, env=job_env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    start_new_session=True, preexec_fn=_die_with_worker,
                )
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            if uid is not None:
                uid.release()
            raise
        return LocalExecution(proc, workdir, scratch=scratch, uid=uid)
