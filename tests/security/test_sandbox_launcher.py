"""The sandbox launcher and its wiring, driven directly with real processes (no service)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controlroom.adapters.execution.sandbox import Sandbox
from controlroom.cli.sandboxing import SandboxUnavailableError, local_sandbox
from controlroom.settings import SandboxSettings, Settings

_why_not = Sandbox(SandboxSettings()).probe()
needs_sandbox = pytest.mark.skipif(_why_not is not None, reason=f"no job sandbox here: {_why_not}")


@pytest.fixture
def scratch() -> Iterator[Path]:
    """<scratch>/work for the job, <scratch>/root for its sandbox's root."""
    path = Path(tempfile.mkdtemp(prefix="controlroom-launcher-test-"))
    (path / "work").mkdir()
    (path / "root").mkdir()
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def run(sandbox: Sandbox, scratch: Path, code: str, env: dict[str, str] | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    uid = sandbox.lease()
    try:
        network = sandbox.network()
        proc = sandbox.start([sys.executable, "-I", "-c", code],
                             sandbox.job_env(env or {"PATH": "/usr/bin:/bin"}, network),
                             workdir=scratch / "work", root=scratch / "root", uid=uid,
                             network=network)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        if uid is not None:
            uid.release()


@needs_sandbox
def test_without_a_network_a_job_has_only_loopback_and_no_api_credentials(scratch: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as host_listener:
        port = host_listener.getsockname()[1]
        code = (
            "import json, os, socket\n"
            "def reach(port):\n"
            "    try:\n"
            "        socket.create_connection(('127.0.0.1', port), timeout=2).close()\n"
            "        return 'reached'\n"
            "    except OSError as e:\n"
            "        return type(e).__name__\n"
            "own = socket.create_server(('127.0.0.1', 0))\n"
            f"print(json.dumps({{'host': reach({port}), 'loopback': reach(own.getsockname()[1]),\n"
            "                  'env': sorted(os.environ)}))\n"
        )
        sandbox = Sandbox(SandboxSettings(network="none"))
        env = {"PATH": "/usr/bin:/bin", "CONTROLROOM_URL": "http://127.0.0.1:1",
               "CONTROLROOM_TOKEN": "t", "CONTROLROOM_RUN_ID": "r"}
        done = run(sandbox, scratch, code, env)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["host"] == "ConnectionRefusedError", "the host's loopback is out of reach"
    assert seen["loopback"] == "reached", "its own loopback works"
    assert "CONTROLROOM_URL" not in seen["env"] and "CONTROLROOM_TOKEN" not in seen["env"]
    assert "CONTROLROOM_RUN_ID" in seen["env"]


@needs_sandbox
def test_the_job_exits_as_it_did_inside_by_code_or_by_signal(scratch: Path) -> None:
    sandbox = Sandbox(SandboxSettings())
    assert run(sandbox, scratch, "raise SystemExit(7)").returncode == 7
    killed = run(sandbox, scratch, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert killed.returncode == -signal.SIGKILL


@needs_sandbox
def test_sigterm_to_the_launcher_reaches_the_job_and_its_daemons_die_with_it(scratch: Path) -> None:
    sandbox = Sandbox(SandboxSettings())
    code = ("import os, signal, subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import os, time; os.setsid(); time.sleep(60)'])\n"
            "signal.signal(signal.SIGTERM, lambda *_: (print('got SIGTERM', flush=True), sys.exit(3)))\n"
            "print('up', flush=True)\n"
            "time.sleep(60)\n")
    uid = sandbox.lease()
    proc = sandbox.start([sys.executable, "-I", "-c", code], {"PATH": "/usr/bin:/bin"},
                         workdir=scratch / "work", root=scratch / "root", uid=uid)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"up\n"
        time.sleep(0.2)  # the daemon has started
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)  # pipes close: no daemon holds them open
        assert proc.returncode == 3 and b"got SIGTERM" in out
    finally:
        proc.kill()
        if uid is not None:
            uid.release()


@needs_sandbox
def test_a_host_that_cannot_sandbox_refuses_shared_deployments_and_warns_embedded_ones(
    tmp_path: Path,
) -> None:
    broken = SandboxSettings(tmp_bytes=-1)  # a tmpfs the kernel refuses: the probe fails
    shared = Settings(database_url="postgresql://db.example/x", data_dir=tmp_path, sandbox=broken)
    with pytest.raises(SandboxUnavailableError, match="CONTROLROOM_UNSAFE_NO_SANDBOX"):
        local_sandbox(shared)
    unsafe = SandboxSettings(tmp_bytes=-1, unsafe_no_sandbox=True)
    shared.sandbox = unsafe
    sandbox, warning = local_sandbox(shared)
    assert sandbox is None and warning and "UNSANDBOXED" in warning
    embedded = Settings(data_dir=tmp_path, sandbox=broken)
    sandbox, warning = local_sandbox(embedded)
    assert sandbox is None and warning and "UNSANDBOXED" in warning
    assert local_sandbox(Settings(data_dir=tmp_path))[1] is None


def test_a_data_dir_that_jobs_would_see_is_refused() -> None:
    inside_python = Path(sys.prefix) / "controlroom-data"
    with pytest.raises(SandboxUnavailableError, match="every job sees"):
        local_sandbox(Settings(data_dir=inside_python))


def test_command_line_processes_are_not_dumpable(tmp_path: Path) -> None:
    """Even their own uid can't read their environ or ptrace them (PR_GET_DUMPABLE is 0)."""
    if sys.platform != "linux":
        pytest.skip("PR_SET_DUMPABLE is Linux's")
    code = ("import ctypes, sys\n"
            "from controlroom.cli.entry import main\n"
            f"main(['--data-dir', {str(tmp_path)!r}, 'token', '--tenant', 't', '--sub', 's'])\n"
            "print('dumpable', ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2], check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "dumpable 0"


@needs_sandbox
def test_readyz_says_loudly_when_jobs_run_unsandboxed(
    make_server_database: Callable[[], str], tmp_path: Path
) -> None:
    from litestar.testing import TestClient

    from controlroom.cli import bootstrap, build_app

    unsafe = SandboxSettings(tmp_bytes=-1, unsafe_no_sandbox=True)
    settings = Settings(database_url=make_server_database(), data_dir=tmp_path, jwt_secret="x" * 32,
                        sandbox=unsafe)
    with bootstrap(settings, run_projections=False) as services, \
            TestClient(build_app(services)) as client:
        body = client.get("/readyz").json()
    assert "UNSANDBOXED" in body["warnings"]["sandbox"]


AS_A_USER = r"""
import json, os, sys, tempfile
from pathlib import Path
from controlroom.adapters.execution.sandbox import Sandbox
from controlroom.settings import SandboxSettings
sandbox = Sandbox(SandboxSettings())
assert sandbox.uids is None, "not root: no uid pool"
scratch = Path(tempfile.mkdtemp())
(scratch / "work").mkdir()
(scratch / "root").mkdir()
code = (
    "import json, os\n"
    "def attempt(f):\n"
    "    try:\n"
    "        f()\n"
    "        return 'done'\n"
    "    except OSError as e:\n"
    "        return type(e).__name__\n"
    "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
    "print(json.dumps({'uid': os.getuid(), 'pids': pids,\n"
    "    'write_etc': attempt(lambda: open('/etc/owned', 'w')),\n"
    "    'write_work': attempt(lambda: open('mine', 'w').write('x')),\n"
    "    'root_dirs': sorted(os.listdir('/'))}))\n"
)
proc = sandbox.start([sys.executable, "-I", "-c", code], {"PATH": "/usr/bin:/bin"},
                     workdir=scratch / "work", root=scratch / "root", uid=None)
out, err = proc.communicate(timeout=30)
print(json.dumps({"code": proc.returncode, "out": out.decode(), "err": err.decode()}))
"""


@needs_sandbox
def test_as_a_user_the_sandbox_uses_a_user_namespace_of_its_own() -> None:
    """Run the service as uid 1000 (a user namespace mapping it to us, so files stay readable)."""
    import shutil

    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare to become a user")
    as_user = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    if subprocess.run([*as_user, "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("this host does not allow user namespaces")
    done = subprocess.run([*as_user, sys.executable, "-c", AS_A_USER], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
                          check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 0, result["err"]
    seen = json.loads(result["out"])
    assert seen["uid"] == 1000, "the job keeps the service's uid, without privileges"
    assert seen["pids"] == [1, 2]
    assert seen["write_etc"] in ("OSError", "PermissionError") and seen["write_work"] == "done"
    assert "root" in seen["root_dirs"] and "home" not in seen["root_dirs"]
