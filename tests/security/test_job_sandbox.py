"""Jobs as an attacker writes them, submitted through the real service: each is contained.

A job must not read the service's environment, its data dir, another job's working dir or
secrets, or the host's processes; a fork bomb, a memory hog and a job writing 10 GB end
within their limits while another tenant's job completes, and leave no process behind.
"""

from __future__ import annotations

import ast
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from controlroom.adapters.execution.sandbox import Sandbox
from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import Services, bootstrap, build_app
from controlroom.settings import SandboxSettings, Settings
from tests.conftest import job, wait_for_status, wait_until
from tests.job_gate import JobGate

LIMITS = SandboxSettings(memory_bytes=512 * 1024**2, max_file_bytes=64 * 1024**2,
                         max_processes=64, cpu_s=60, tmp_bytes=32 * 1024**2)
"""Tight, so the attacks below hit them in a moment."""
SERVICE_CANARY = "service-canary-" + uuid.uuid4().hex
SECRET_CANARY = "tenant-b-secret-" + uuid.uuid4().hex

_why_not = Sandbox(LIMITS).probe()
pytestmark = pytest.mark.skipif(_why_not is not None, reason=f"no job sandbox here: {_why_not}")


@pytest.fixture(scope="module")
def services(make_server_database: Callable[[], str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """A service with a canary in its environment, whose worker sandboxes jobs tightly."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SECURITY_SERVICE_CANARY", SERVICE_CANARY)
    settings = Settings(database_url=make_server_database(), data_dir=tmp_path_factory.mktemp("sec-data"),
                        jwt_secret="jwt-canary-" + uuid.uuid4().hex, worker_slots=4,
                        sandbox=LIMITS)
    try:
        with bootstrap(settings) as s:
            assert s.sandbox_warning is None
            yield s
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[TestClient[Any]]:
    """An HTTP client of that service."""
    with TestClient(build_app(services)) as c:
        yield c


def headers(services: Services) -> dict[str, str]:
    """Authorization for a new tenant of its own."""
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    token = issue_token(services.jwt_secret, tenant=tenant, sub="mallory", scopes=ALL_SCOPES,
                        ttl_s=600)
    return {"Authorization": f"Bearer {token}"}


def submit(client: TestClient[Any], auth: dict[str, str], source: str, **extra: Any) -> str:
    body = job(source)
    body.update(extra)
    resp = client.post("/api/v1/jobs/run", json=body, headers=auth)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


def logs(client: TestClient[Any], run: dict[str, Any], auth: dict[str, str]) -> str:
    return client.get(run["logs_url"], headers=auth).text


def job_processes() -> list[int]:
    """Host pids running as one of the job uids."""
    base, count = LIMITS.uid_base, LIMITS.uid_count
    found = []
    for entry in os.listdir("/proc"):
        try:
            uid = Path(f"/proc/{entry}").stat().st_uid
        except (OSError, ValueError):
            continue
        if entry.isdigit() and base <= uid < base + count:
            found.append(int(entry))
    return found


def assert_no_job_process_left() -> None:
    wait_until(lambda: not job_processes(), timeout=5, what="every job process to be gone")


SNOOP = r"""
import glob, os
def show(what, read):
    try:
        print(what, "=>", read())
    except Exception as e:
        print(what, "=> refused:", type(e).__name__)
def environs():
    out = []
    for path in glob.glob("/proc/*/environ"):
        try:
            out.append(open(path, "rb").read().decode(errors="replace"))
        except OSError:
            pass
    return out
show("pids", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
show("environs", environs)
show("parent environ", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read())
show("init environ", lambda: open("/proc/1/environ", "rb").read())
show("data dir", lambda: os.listdir(DATA_DIR))
show("jwt key", lambda: open(os.path.join(DATA_DIR, "keys", "jwt_secret")).read())
others = lambda pattern: [p for p in glob.glob(pattern) if not p.startswith(os.getcwd())]
show("other workdirs", lambda: others("/tmp/controlroom-run-*/work/*"))
show("other code", lambda: [open(p).read() for p in others("/tmp/controlroom-run-*/work/main.py")])
show("tmp", lambda: os.listdir("/tmp"))
show("repo", lambda: os.listdir(REPO))
show("uid", lambda: (os.getuid(), os.getgid(), os.getgroups()))
show("mountinfo", lambda: open("/proc/self/mountinfo").read())
for path in ("/etc/hostname-write-test", "/usr/owned", os.path.join(REPO, "owned")):
    show("write " + path, lambda: open(path, "w").write("x"))
"""


def test_a_job_reads_nothing_of_the_service_or_of_another_tenants_running_job(
    services: Services, client: TestClient[Any]
) -> None:
    alice, bob = headers(services), headers(services)
    with JobGate() as gate:
        # Bob's job holds a secret and stays running while Alice's job snoops.
        bob_run = submit(client, bob, "import os\n" + gate.source("os.environ['API_TOKEN']"),
                         spec={"description": "holds a secret",
                               "secrets": {"API_TOKEN": SECRET_CANARY}})
        assert gate.arrived() == SECRET_CANARY
        repo = Path(__file__).resolve().parents[2]
        source = f"DATA_DIR = {str(services.settings.data_dir)!r}\nREPO = {str(repo)!r}\n" + SNOOP
        run = wait_for_status(client, submit(client, alice, source), alice)
        gate.open()
        assert wait_for_status(client, bob_run, bob)["status"] == "completed"
    assert run["status"] == "completed", run
    text = logs(client, run, alice)
    for canary in (SERVICE_CANARY, SECRET_CANARY, services.jwt_secret, services.dsn):
        assert canary not in text and canary[::-1] not in text, "a secret reached another job"
    lines = dict(line.split(" => ", 1) for line in text.splitlines() if " => " in line)
    assert lines["pids"] == "[1, 2]", "the job sees only itself and its sandbox's init"
    assert lines["parent environ"].startswith("refused")
    assert lines["init environ"].startswith("refused")
    assert lines["data dir"].startswith("refused") and lines["jwt key"].startswith("refused")
    assert lines["other workdirs"] == "[]" and lines["other code"] == "[]"
    assert lines["tmp"] == "['controlroom-run-" + lines["tmp"].split("controlroom-run-")[1]
    assert "pyproject.toml" not in lines["repo"], "of the repo, at most its .venv is visible"
    uid = ast.literal_eval(lines["uid"])
    assert LIMITS.uid_base <= uid[0] < LIMITS.uid_base + LIMITS.uid_count and uid[2] == []
    mountinfo = text.split("mountinfo => ", 1)[1]
    assert str(services.settings.data_dir) not in mountinfo
    assert " / / ro," in mountinfo
    for what in ("write /etc/hostname-write-test", "write /usr/owned"):
        assert lines[what].startswith("refused"), what
    assert lines[f"write {repo}/owned"].startswith("refused")
    assert not (repo / "owned").exists()
    assert_no_job_process_left()


def test_the_data_dir_is_closed_to_other_users_and_readyz_has_no_warning(
    services: Services, client: TestClient[Any]
) -> None:
    assert services.settings.data_dir.stat().st_mode & 0o007 == 0
    assert "warnings" not in client.get("/readyz").json()


FORK_BOMB = """
import os
print("forking", flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
MEMORY_HOG = "hog = bytearray(4 * 1024**3)\nprint('allocated 4 GiB')\n"
DISK_FILLER = """
import os
chunk = b"x" * (1 << 20)
with open(os.path.join(os.environ["CONTROLROOM_OUTPUT_DIR"], "big.bin"), "wb") as f:
    for _ in range(10 * 1024):  # 10 GiB
        f.write(chunk)
print("wrote 10 GiB")
"""
TMP_FILLER = """
chunk = b"x" * (1 << 20)
with open("/tmp/big.bin", "wb") as f:
    for _ in range(10 * 1024):
        f.write(chunk)
print("wrote 10 GiB")
"""


def test_a_fork_bomb_ends_at_its_deadline_and_leaves_nothing(
    services: Services, client: TestClient[Any]
) -> None:
    bomber, other = headers(services), headers(services)
    bomb = submit(client, bomber, FORK_BOMB, timeout_s=5)
    wait_until(lambda: len(job_processes()) >= LIMITS.max_processes // 2, timeout=10,
               what="the bomb to fork")
    assert len(job_processes()) <= LIMITS.max_processes + 2, "the process limit holds"
    bystander = submit(client, other, "print('still served')")
    assert wait_for_status(client, bystander, other)["status"] == "completed"
    run = wait_for_status(client, bomb, bomber, timeout=30)
    assert run["status"] == "failed" and run["error"]["reason"] == "timeout"
    assert_no_job_process_left()


@pytest.mark.parametrize(("source", "expect"), [
    (MEMORY_HOG, "MemoryError"),
    (DISK_FILLER, "File too large"),
    (TMP_FILLER, "No space left on device"),
], ids=["memory-hog", "10-GB-output", "10-GB-tmp"])
def test_a_greedy_job_fails_at_its_limit_while_others_complete(
    services: Services, client: TestClient[Any], source: str, expect: str
) -> None:
    greedy, other = headers(services), headers(services)
    run_id = submit(client, greedy, source)
    bystander = submit(client, other, "print('still served')")
    run = wait_for_status(client, run_id, greedy, timeout=60)
    assert run["status"] == "failed", run
    assert "wrote 10 GiB" not in logs(client, run, greedy)
    assert expect in run["error"]["message"], run
    big = [a for a in run["artifacts"] if a["path"] == "big.bin"]
    assert all(a["size"] <= LIMITS.max_file_bytes for a in big), "kept to the file-size limit"
    assert wait_for_status(client, bystander, other)["status"] == "completed"
    assert_no_job_process_left()


CUT_OFF = """
import json, os, socket
from controlroom import sdk
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
    reached = "reached"
except OSError as e:
    reached = type(e).__name__
print("seen", json.dumps({"host": reached, "url": "CONTROLROOM_URL" in os.environ,
                          "token": "CONTROLROOM_TOKEN" in os.environ}))
sdk.log("reported", "offline")
"""


def test_a_run_can_cut_its_own_network_and_the_sdk_still_reports(
    services: Services, client: TestClient[Any]
) -> None:
    import json
    import socket

    auth = headers(services)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        source = f"PORT = {listener.getsockname()[1]}\n" + CUT_OFF
        run_id = submit(client, auth, source, spec={"description": "offline", "network": "none"})
        run = wait_for_status(client, run_id, auth)
    assert run["status"] == "completed", run
    seen = json.loads(logs(client, run, auth).split("seen ", 1)[1].splitlines()[0])
    assert seen == {"host": "ConnectionRefusedError", "url": False, "token": False}
    assert "reported offline" in logs(client, run, auth), "its output still reaches the log"
