"""Job SDK: report progress, log lines, artifacts and lineage from job code (stdlib only).

    from controlroom import sdk
    sdk.progress(40, "loading rows")
    sdk.log("loaded", 1200, "rows")
    sdk.artifact("report.csv")
    sdk.lineage("supabase://public.orders", "warehouse.orders_daily")

Under Control Room the worker sets `CONTROLROOM_URL`, `CONTROLROOM_RUN_ID` and
`CONTROLROOM_TOKEN` (a short-lived token confined to this run); `progress` and `lineage`
are then posted to `POST /api/v1/runs/{run_id}/events`. Without them (a laptop, another
runner) they print the control lines the worker also understands — `::progress 40 msg`,
`::lineage a b` — so the same code runs anywhere. `log` always writes to stdout: the worker
records it in order with the job's other output and scrubs secrets from it. `artifact`
copies a file into the job's `output/` dir; everything there becomes an artifact of the run
when the attempt ends.

Errors, all raised only under Control Room (degraded mode never talks to the network):

    ControlRoomError            base class
    ├── ReportRejectedError     the API refused the report (4xx): `.status`, `.detail`
    └── ControlRoomUnavailableError
                                unreachable, or 5xx / 429 after `MAX_TRIES` tries
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

DEFAULT_TIMEOUT_S = 10.0
MAX_TRIES = 3
BACKOFF_S = 0.5
MAX_RETRY_AFTER_S = 10.0
ENV_URL, ENV_RUN_ID, ENV_TOKEN = "CONTROLROOM_URL", "CONTROLROOM_RUN_ID", "CONTROLROOM_TOKEN"
ENV_OUTPUT_DIR = "CONTROLROOM_OUTPUT_DIR"


class ControlRoomError(Exception):
    """Something went wrong reporting to Control Room."""


class ReportRejectedError(ControlRoomError):
    """The API refused the report; retrying the same report won't help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"Control Room refused the report ({status}): {detail}")
        self.status = status
        self.detail = detail


class ControlRoomUnavailableError(ControlRoomError):
    """The API could not be reached, or stayed unavailable, after retries."""


def in_control_room() -> bool:
    """True when running under a Control Room worker that gave this job a run token."""
    return all(os.environ.get(k) for k in (ENV_URL, ENV_RUN_ID, ENV_TOKEN))


def progress(percent: float, message: str = "") -> None:
    """Report how far the job has got (0 to 100) and what it is doing."""
    percent = float(percent)
    if not (math.isfinite(percent) and 0 <= percent <= 100):
        raise ValueError(f"percent must be between 0 and 100, not {percent}")
    if in_control_room():
        _post({"event_type": "progress", "percent": percent, "message": message})
    else:
        number = f"{percent:.2f}".rstrip("0").rstrip(".")
        _print(f"::progress {number} {' '.join(message.split())}".rstrip())


def log(*parts: object, stream: str = "stdout") -> None:
    """Write a log line (parts joined by spaces) to stdout, or stderr with stream="stderr"."""
    if stream not in ("stdout", "stderr"):
        raise ValueError("stream must be 'stdout' or 'stderr'")
    print(*parts, file=sys.stderr if stream == "stderr" else sys.stdout, flush=True)


def lineage(source: str, target: str) -> None:
    """Record that this run read `source` and wrote `target` (URIs or schema.table)."""
    for entity in (source, target):
        if not entity or not isinstance(entity, str):
            raise ValueError("lineage entities must be non-empty strings")
    if in_control_room():
        _post({"event_type": "lineage", "source": source, "target": target})
        return
    if any(len(e.split()) != 1 for e in (source, target)):
        raise ValueError("entity names with whitespace can't be written as a ::lineage line")
    _print(f"::lineage {source} {target}")


def output_dir() -> Path:
    """The directory whose files become the run's artifacts (`./output` outside Control Room)."""
    return Path(os.environ.get(ENV_OUTPUT_DIR) or "output").absolute()


def artifact(path: str | os.PathLike[str], name: str | None = None) -> str:
    """Keep a file as an artifact: copy it into `output/` (as `name`, default its file name).

    Returns its path relative to `output/`, the `path` it will have in the run's artifacts.
    """
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"no such file: {src}")
    out = output_dir()
    resolved = src.resolve()
    if name is None and resolved.is_relative_to(out.resolve()):
        return resolved.relative_to(out.resolve()).as_posix()  # already an output
    rel = PurePosixPath(name or src.name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"artifact name must be a relative path inside output/, not {name!r}")
    target = out / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return rel.as_posix()


def _print(line: str) -> None:
    print(line, flush=True)


def _post(event: dict[str, object]) -> None:
    url = f"{os.environ[ENV_URL].rstrip('/')}/api/v1/runs/{os.environ[ENV_RUN_ID]}/events"
    request = urllib.request.Request(
        url, data=json.dumps(event).encode(), method="POST",
        headers={"Authorization": f"Bearer {os.environ[ENV_TOKEN]}",
                 "Content-Type": "application/json", "User-Agent": "controlroom-sdk"},
    )
    problem = "no attempt made"
    for attempt in range(1, MAX_TRIES + 1):
        delay = BACKOFF_S * 2 ** (attempt - 1)
        try:
            with urllib.request.urlopen(request, timeout=DEFAULT_TIMEOUT_S):
                return
        except urllib.error.HTTPError as e:
            detail = _detail(e)
            if e.code != 429 and e.code < 500:
                raise ReportRejectedError(e.code, detail) from None
            problem = f"{e.code}: {detail}"
            delay = _retry_after(e, delay)
        except (urllib.error.URLError, OSError) as e:
            problem = str(getattr(e, "reason", e))
        if attempt < MAX_TRIES:
            time.sleep(delay)
    raise ControlRoomUnavailableError(f"could not report to Control Room at {url}: {problem}")


def _detail(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read() or b"{}")
    except (ValueError, OSError):
        return e.reason or "error"
    return str(body.get("detail") or e.reason) if isinstance(body, dict) else str(e.reason)


def _retry_after(e: urllib.error.HTTPError, default: float) -> float:
    try:
        return min(float(e.headers.get("Retry-After", default)), MAX_RETRY_AFTER_S)
    except ValueError:
        return default
