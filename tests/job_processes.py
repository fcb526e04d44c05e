"""Finding a run's job processes on the host: a sandboxed job's own pids are its namespace's."""

from __future__ import annotations

import os
from pathlib import Path


def processes_of(run_id: str, attempt: int | None = None) -> set[int]:
    """Pids of the host's processes started for `run_id` (they carry it in their environment)."""
    wanted = {f"CONTROLROOM_RUN_ID={run_id}".encode()}
    if attempt is not None:
        wanted.add(f"CONTROLROOM_ATTEMPT={attempt}".encode())
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if wanted <= set(environ.split(b"\0")):
                found.add(int(entry))
    return found
