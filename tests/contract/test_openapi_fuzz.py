"""Schemathesis against a live `controlroom serve`: every operation of /schema/openapi.json,
every check, with an admin token, for a bounded time. No server error, and every answer as
the document says (status, content type, body, headers, Allow).

Operations where the server checks more than JSON Schema can say are listed, with why, in
schemathesis.toml beside this file. The summary (counts by check) is printed even when
pytest captures output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controlroom.api.auth import issue_token
from tests.live_events import ServeProcess

pytest.importorskip("schemathesis")

pytestmark = pytest.mark.slow

FUZZ_SECONDS = int(os.environ.get("CONTROLROOM_FUZZ_SECONDS", "120"))
"""Schemathesis's time budget: fuzzing and stateful phases repeat until it is spent."""
MAX_EXAMPLES = 25
WORKERS = "1"
"""One: hypothesis parses sources with ast, which CPython 3.11.7 can't do from two threads at once."""
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def server(make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ServeProcess, str]]:
    """A real server on its own database, and an admin token for it."""
    secret = "fuzz-secret-" + uuid.uuid4().hex
    proc = ServeProcess(make_server_database(), tmp_path_factory.mktemp("fuzz"), jwt_secret=secret)
    try:
        proc.wait_ready()
        token = issue_token(secret, tenant="fuzz", sub="schemathesis", scopes=["admin"], ttl_s=3600)
        yield proc, token
    finally:
        proc.stop()


def _schemathesis() -> list[str]:
    script = Path(sys.executable).with_name("st")
    return [str(script)] if script.exists() else [sys.executable, "-m", "schemathesis.cli"]


def test_schemathesis_finds_no_server_error_and_no_nonconformance(
        server: tuple[ServeProcess, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc, token = server
    cmd = [*_schemathesis(), "--config-file", str(CONFIG), "run", f"{proc.base_url}/schema/openapi.json",
           "--checks", "all", "--header", f"Authorization: Bearer {token}",
           "--max-time", str(FUZZ_SECONDS), "--max-examples", str(MAX_EXAMPLES), "--workers", WORKERS,
           "--request-timeout", "30", "--no-color", "--report-dir", str(tmp_path)]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                            timeout=FUZZ_SECONDS + 120, env={**os.environ, "NO_COLOR": "1"})
    output = result.stdout + result.stderr
    summary = output[output.rfind("SUMMARY"):] if "SUMMARY" in output else output[-4000:]
    with capsys.disabled():
        print(f"\n--- schemathesis ({' '.join(cmd[:1])} run … --checks all) ---\n{summary}")
    assert result.returncode == 0, output[-20000:] + proc.output()
    assert re.search(r"\d+ generated", summary), summary
    assert "Server error" not in output
