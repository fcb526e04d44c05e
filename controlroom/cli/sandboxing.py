"""Whether local jobs run sandboxed here: probed once at start, refused where it is unsafe."""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Any

from controlroom.settings import Settings

log = logging.getLogger("controlroom")

PR_SET_DUMPABLE = 4


class SandboxUnavailableError(RuntimeError):
    """Jobs can't be sandboxed here and this deployment may not run them without."""


def not_dumpable() -> None:
    """Make this process undumpable: not even its own uid can read its /proc environ or
    memory, or ptrace it (Linux; a no-op elsewhere)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def local_sandbox(settings: Settings) -> tuple[Any, str | None]:
    """The Sandbox local jobs run in, or (None, a warning) on a host that can't sandbox.

    Without a sandbox any job can read the service's files and other jobs': tolerated with a
    loud warning for an embedded (single-tenant) install, refused with an external database
    unless CONTROLROOM_UNSAFE_NO_SANDBOX=1.
    """
    from controlroom.adapters.execution.sandbox import Sandbox

    sandbox = Sandbox(settings.sandbox)
    if shown := sandbox.exposing(settings.data_dir):
        raise SandboxUnavailableError(
            f"the data dir {settings.data_dir} is inside {shown}, which every job sees: move it "
            "(CONTROLROOM_DATA_DIR) out of the system and Python dirs")
    why = sandbox.probe()
    if why is None:
        log.info("local jobs run sandboxed (network: %s)", settings.sandbox.network)
        return sandbox, None
    warning = (f"local jobs run UNSANDBOXED, as this service's own user: {why}. Any job can "
               "read this service's files and other jobs' (see docs/sandbox.md)")
    if not settings.embedded and not settings.sandbox.unsafe_no_sandbox:
        raise SandboxUnavailableError(
            f"refusing to run jobs: {why}. With an external database this is a shared "
            "deployment; set CONTROLROOM_UNSAFE_NO_SANDBOX=1 to run jobs unsandboxed anyway "
            "(see docs/sandbox.md)")
    log.warning("!" * 78)
    log.warning("WARNING: %s", warning)
    log.warning("!" * 78)
    return None, warning
