"""Processes started together and released at once: start-up races, run for real."""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable
from typing import Any


def at_once(step: Callable[..., object], *args: Any, processes: int, liveness_s: float) -> None:
    """Run `step(*args)` in `processes` spawned processes released together by a barrier;
    fail with every process's traceback, or if one did not exit cleanly. `step` must be a
    module-level function (spawned processes import it)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_released, args=(step, args, barrier, errors, liveness_s))
             for _ in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(liveness_s)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures, "\n".join(failures)
    assert [p.exitcode for p in procs] == [0] * processes


def _released(step: Callable[..., object], args: tuple[Any, ...], barrier: Any, errors: Any,
              liveness_s: float) -> None:
    try:
        barrier.wait(liveness_s)
        step(*args)
    except BaseException:
        errors.put(traceback.format_exc())
