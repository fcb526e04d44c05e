"""Artifact paths the service writes itself, which no job or client may upload to.

The worker archives a run's code under `code/` and its log at `logs/run.log`; an upload
there would list a forged log or code file beside the real one.
"""

from __future__ import annotations

CODE_PREFIX = "code/"
LOG_PREFIX = "logs/"
LOG_PATH = f"{LOG_PREFIX}run.log"
RESERVED_PREFIXES = (CODE_PREFIX, LOG_PREFIX)


def reserved_prefix(path: str) -> str | None:
    """The reserved prefix a (normalized, relative) path falls under, if any; case-blind."""
    folded = path.lower()
    for prefix in RESERVED_PREFIXES:
        if folded.startswith(prefix) or folded == prefix.rstrip("/"):
            return prefix
    return None
