"""For blocking callers (the operator CLI): wait until a projection shows every event of its kind."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg

from controlroom.projections.rebuild import log_head, tracked_position

WAIT_POLL_S = 0.05


def wait_caught_up(conn: psycopg.Connection[Any], projection: str, topics: Sequence[str],
                   timeout_s: float) -> bool:
    """True once `projection` has applied the newest event with one of `topics`."""
    target = log_head(conn, tuple(topics))
    deadline = time.monotonic() + timeout_s
    while tracked_position(conn, projection) < target:
        if time.monotonic() >= deadline:
            return False
        time.sleep(WAIT_POLL_S)
    return True
