"""What the built-in runners share: reading their environment and reporting."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

DRY_RUN_ENV = "CONTROLROOM_DRY_RUN"
APPLICATION_NAME = "controlroom-job"
CONNECT_TIMEOUT_S = 10


class JobError(Exception):
    """The job can't go on; its message is the reason printed to stderr."""


def env_json(name: str) -> Any:
    """The JSON value of environment variable `name`."""
    try:
        return json.loads(os.environ[name])
    except (KeyError, ValueError):
        raise JobError(f"${name} is missing or not JSON (start this through Control Room)") from None


def dsn_from(item: dict[str, Any]) -> str:
    """The DSN of a resolved URI or target (`{"connection": …, "env": …}`)."""
    dsn = os.environ.get(item.get("env") or "")
    if not dsn:
        raise JobError(f"no DSN for connection {item.get('connection')!r} in the environment")
    return dsn


def is_dry_run() -> bool:
    """True when the run was submitted with `spec.dry_run`."""
    return os.environ.get(DRY_RUN_ENV) == "true"


def progress(percent: float, message: str) -> None:
    """Report progress through the worker's `::progress` control line."""
    print(f"::progress {percent:.0f} {message}", flush=True)


def lineage(source: str, target: str) -> None:
    """Record a lineage edge now, through the `::lineage` control line."""
    print(f"::lineage {source} {target}", flush=True)


def run(main: Any) -> None:
    """Call `main()`; a JobError becomes a message on stderr and exit code 1."""
    try:
        code = main()
    except JobError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        code = 1
    sys.exit(code or 0)
