"""Starts one job in a sandbox of its own: `python -I -S -c "…import sandbox; sandbox.main()" <fd>`.

Stdlib only (it runs without site-packages, so it starts in a few milliseconds) and Linux
only. Its configuration is a dict in `marshal` format (no json: importing it costs more than
the rest of the launcher) read from file descriptor `<fd>`, never from its environment, so
nothing of the job's secrets shows in this process's own environ:

    argv, env      the job's command and its whole environment
    workdir        the job's working dir: the only writable path it sees (same path inside)
    root           an empty dir the new root is mounted on
    uid, gid       the unprivileged ids the job runs as (root only); null: keep ours, in a
                   user namespace mapping our uid to itself
    network        false: a network namespace of its own, with only loopback
    readonly       host paths the job sees read-only (system dirs, the Python prefixes)
    tmp_bytes      size of its private /tmp
    limits         rlimits by name: as, cpu, nproc, nofile, fsize

It unshares mount, PID, IPC and UTS namespaces (and net when cut off), stays as the job's
PID 1 (reaping, forwarding SIGTERM/SIGINT/SIGHUP; when it dies the kernel kills every
process of the job), builds a root of its own and pivots into it, then drops to the job's
ids with no new privileges and the limits, and execs the job. This process exits as the
job did: with its exit code, or killed by the same signal. Exit code 126: the sandbox
could not be built (the reason is on stderr); 127: the command could not be started.
"""

from __future__ import annotations

# Only cheap imports: `signal`, `typing` and `ctypes` pull in enum, re and struct, which
# would double the launcher's start-up; `_signal` and `_ctypes` are what they wrap.
import _ctypes
import marshal
import os
import resource
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from typing import Any

    # The stubs know `signal` only, and make _SimpleCData generic, which it isn't at run time.
    _IntData = _ctypes._SimpleCData[int]
else:
    import _signal as signal

    _IntData = _ctypes._SimpleCData

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 1
MOUNT_ATTR_NOSUID = 2
MOUNT_ATTR_NODEV = 4
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
SYSCALLS = {"x86_64": {"pivot_root": 155, "mount_setattr": 442},
            "aarch64": {"pivot_root": 41, "mount_setattr": 442}}
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "shm": "/tmp"}
RLIMITS = {"as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU, "nproc": resource.RLIMIT_NPROC,
           "nofile": resource.RLIMIT_NOFILE, "fsize": resource.RLIMIT_FSIZE}
HOSTNAME = b"controlroom-job"
EXIT_SANDBOX_FAILED = 126
EXIT_NOT_STARTED = 127



class _Int(_IntData):
    _type_ = "i"


class _Long(_IntData):
    _type_ = "l"


class _ULong(_IntData):
    _type_ = "L"


class _Function(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Int


class _Libc:
    """The C library's functions, errno kept (what ctypes.CDLL(None, use_errno=True) gives)."""

    def __init__(self) -> None:
        # None: the program itself, as dlopen(3) has it; the stubs want a path.
        self._handle = _ctypes.dlopen(None, 0)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        # The stubs want a ctypes.CDLL: what the call needs of one is its `_handle`.
        function = _Function((name, self))  # type: ignore[arg-type]
        setattr(self, name, function)
        return function


libc = _Libc()


class SandboxError(Exception):
    """A step of building the sandbox failed."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = _ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(err)} (errno {err})")


def _syscall(name: str, *args: Any) -> int:
    numbers = SYSCALLS.get(os.uname().machine)
    if numbers is None:
        raise SandboxError(f"unsupported machine {os.uname().machine}")
    return int(libc.syscall(_Long(numbers[name]), *args))


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    """mount(2)."""
    _check(libc.mount(_c(source), _c(target), _c(fstype), _ULong(flags), _c(data or None)),
           f"mount {source or fstype} on {target}")


def _c(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def restrict(target: str, attrs: int) -> None:
    """Set mount attributes (read-only, nosuid, nodev) on `target` and every mount under it."""
    # struct mount_attr {u64 attr_set, attr_clr, propagation, userns_fd}
    attr = attrs.to_bytes(8, sys.byteorder) + bytes(24)
    result = _syscall("mount_setattr", _Long(AT_FDCWD), _c(target), _ULong(AT_RECURSIVE), attr,
                      _ULong(len(attr)))
    if result != 0 and _ctypes.get_errno() == 38:  # ENOSYS before Linux 5.12: the top mount only
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV
        flags |= MS_RDONLY if attrs & MOUNT_ATTR_RDONLY else 0
        flags |= _kept_flags(target)
        mount(None, target, None, flags)
        return
    _check(result, f"restricting {target}")


def _kept_flags(path: str) -> int:
    """Flags a remount must restate (a user namespace may not clear them)."""
    f = os.statvfs(path).f_flag
    return f & (MS_NOEXEC | 1024 | 2048) | (1 << 21 if f & 4096 else 0)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def unshare(network: bool) -> None:
    """New namespaces for this process; as a user, inside a user namespace of our own."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if not network:
        flags |= CLONE_NEWNET
    as_user = os.geteuid() != 0
    if as_user:
        flags |= CLONE_NEWUSER
    _check(libc.unshare(flags), "unshare")
    if as_user:  # our uid stays our uid inside: the job never holds root even there
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")


def _inside(root: str, path: str) -> str:
    return root + os.path.abspath(path)


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _bind_readonly(root: str, path: str) -> None:
    target = _inside(root, path)
    if os.path.islink(path) and os.path.dirname(os.path.abspath(path)) == "/":
        os.symlink(os.readlink(path), target)  # /bin -> usr/bin on merged-/usr systems
        return
    if os.path.isdir(path):
        _mkdirs(target)
    else:
        _mkdirs(os.path.dirname(target))
        open(target, "a").close()
    mount(path, target, None, MS_BIND | MS_REC)
    restrict(target, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)


def _readonly_paths(paths: list[str]) -> list[str]:
    """Existing paths, each once: none inside another (it is visible already)."""
    kept: list[str] = []
    for path in sorted({os.path.abspath(p) for p in paths if os.path.lexists(p)}):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    # /etc/resolv.conf and the like may point outside /etc (e.g. into /run): show their target
    for link in ("/etc/resolv.conf", "/etc/hosts", "/etc/localtime"):
        real = os.path.realpath(link)
        if os.path.exists(real) and not any(real.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(real)
    return kept


def build_root(config: dict[str, Any]) -> None:
    """Mount the job's root on config['root'] and pivot into it."""
    root = os.path.abspath(config["root"])
    workdir = os.path.abspath(config["workdir"])
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks back to the host
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path in _readonly_paths(config["readonly"]):
        _bind_readonly(root, path)
    tmp = _inside(root, "/tmp")
    _mkdirs(tmp)
    mount("tmpfs", tmp, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={int(config['tmp_bytes'])}")
    _mkdirs(_inside(root, workdir))
    mount(workdir, _inside(root, workdir), None, MS_BIND)
    restrict(_inside(root, workdir), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
    _mkdirs(_inside(root, "/proc"))
    mount("proc", _inside(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _build_dev(_inside(root, "/dev"))
    _check(libc.sethostname(HOSTNAME, _ULong(len(HOSTNAME))), "sethostname")
    if not config["network"]:
        _loopback_up()
    os.chdir(root)
    # pivot_root(".", "."): the old root ends up under the new one, detached right away.
    _check(_syscall("pivot_root", b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "detaching the host's root")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _build_dev(dev: str) -> None:
    _mkdirs(dev)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            open(f"{dev}/{name}", "a").close()
            mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    for name, target in DEV_LINKS.items():
        os.symlink(target, f"{dev}/{name}")


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    iff_up_loopback_running = 0x1 | 0x8 | 0x40
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", iff_up_loopback_running, b""))


def exec_job(config: dict[str, Any]) -> None:
    """In the job's process: drop to its ids and limits, then become its command."""
    try:
        os.setsid()
        for name, value in config["limits"].items():
            if value is not None:
                _limit(RLIMITS[name], int(value))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if config["uid"] is not None:
            os.setgroups([])
            os.setresgid(config["gid"], config["gid"], config["gid"])
            os.setresuid(config["uid"], config["uid"], config["uid"])
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
        os.chdir(config["workdir"])
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)  # Python ignores some; the job gets the defaults
        os.closerange(3, 65536)
        os.execvpe(config["argv"][0], config["argv"], config["env"])
    except (OSError, SandboxError) as e:
        os.write(2, f"sandbox: cannot start {config['argv'][0]}: {e}\n".encode())
    os._exit(EXIT_NOT_STARTED)


def _limit(which: int, value: int) -> None:
    """Soft and hard limit `value`, or the hard limit we have if it is lower (as a user)."""
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY and os.geteuid() != 0:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _forward(pid: int, signum: int) -> None:
    try:  # noqa: SIM105 (contextlib would add to the launcher's start-up)
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def init(config: dict[str, Any], status_fd: int) -> None:
    """PID 1 of the job's namespace: build the root, start the job, reap, report its status."""
    try:
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
        build_root(config)
    except (OSError, SandboxError) as e:
        os.write(2, f"sandbox: could not build the job's sandbox: {e}\n".encode())
        os._exit(EXIT_SANDBOX_FAILED)
    job = os.fork()
    if job == 0:
        os.close(status_fd)
        exec_job(config)
    # PID 1 gets only the signals it handles: pass them on to every process of the job.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: _forward(-1, signum))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(EXIT_SANDBOX_FAILED)
        if pid == job:
            break
    _forward(-1, signal.SIGKILL)  # what the job left running dies with it
    os.write(status_fd, str(status).encode())
    os._exit(0)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def main() -> None:
    """Read the configuration, unshare, fork the namespace's PID 1, exit as the job did."""
    config = marshal.loads(_read_all(int(sys.argv[1])))
    os.umask(0o022)
    try:
        unshare(bool(config["network"]))
    except (OSError, SandboxError) as e:
        os.write(2, f"sandbox: could not create namespaces: {e}\n".encode())
        os._exit(EXIT_SANDBOX_FAILED)
    status_r, status_w = os.pipe()
    child = os.fork()  # the first child in the new PID namespace is its PID 1
    if child == 0:
        os.close(status_r)
        init(config, status_w)
    os.close(status_w)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: _forward(child, signum))
    _, init_status = os.waitpid(child, 0)
    reported = _read_all(status_r)
    status = int(reported) if reported else init_status
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those can't have a handler
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    # os._exit: the interpreter's shutdown would add milliseconds to every job's start
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else EXIT_SANDBOX_FAILED)


if __name__ == "__main__":
    main()
