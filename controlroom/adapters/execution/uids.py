"""The pool of uids local jobs run as (as root): one per running attempt, host-wide."""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from pathlib import Path

RUN_DIR = Path("/run/controlroom/job-uids")


class NoFreeJobUidError(OSError):
    """Every uid of the pool is taken by a running attempt."""


class JobUid:
    """One uid (and the gid of the same number), held until `release()`."""

    def __init__(self, uid: int, lock_fd: int) -> None:
        self.uid = uid
        self.gid = uid
        self._lock_fd: int | None = lock_fd

    def release(self) -> None:
        """Give the uid back to the pool (closing the lock releases it)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class JobUids:
    """Uids `base … base + count - 1`, each taken by at most one attempt on this host.

    A uid is held by an exclusive flock on a file named after it, so worker processes
    sharing the host never hand out the same uid, and a worker that dies frees its uids.
    """

    def __init__(self, base: int, count: int, lock_dir: Path | None = None) -> None:
        if base <= 0 or count <= 0 or base + count > 2**32 - 2:
            raise ValueError(f"job uid pool {base}+{count} is not a range of unprivileged uids")
        self.base = base
        self.count = count
        self.lock_dir = lock_dir or _default_lock_dir()
        self._next = 0

    def acquire(self) -> JobUid:
        """A free uid of the pool; NoFreeJobUidError if all are taken."""
        _private_dir(self.lock_dir)
        for i in range(self.count):
            uid = self.base + (self._next + i) % self.count
            fd = os.open(self.lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._next = (self._next + i + 1) % self.count
            return JobUid(uid, fd)
        raise NoFreeJobUidError(f"all {self.count} job uids from {self.base} are in use")


def _default_lock_dir() -> Path:
    if RUN_DIR.parent.parent.is_dir() and os.access(RUN_DIR.parent.parent, os.W_OK):
        return RUN_DIR
    return Path(tempfile.gettempdir()) / f"controlroom-job-uids-{os.geteuid()}"


def _private_dir(path: Path) -> None:
    """Create `path` 0700, refusing one that someone else owns or made a symlink."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} must be a directory of ours with mode 0700")
