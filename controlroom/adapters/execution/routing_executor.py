"""Launches each attempt on the executor its run asked for (`spec.executor`), else the default."""

from __future__ import annotations

from controlroom.commands.ports import Attempt, Execution, Executor, Launch, PlanError


class RoutingExecutor:
    """Chooses an executor per launch; a run asking for one this worker lacks fails with why."""

    def __init__(self, executors: dict[str, Executor], default: str,
                 unavailable: dict[str, str] | None = None) -> None:
        self.executors = dict(executors)
        self.default = default
        self.unavailable = dict(unavailable or {})

    def launch(self, *, files: dict[str, str], launch: Launch, env: dict[str, str],
               attempt: Attempt | None = None) -> Execution:
        """Start the job on its executor; PlanError `executor_unavailable` if there is none."""
        name = (attempt.executor if attempt is not None else None) or self.default
        executor = self.executors.get(name)
        if executor is None:
            why = self.unavailable.get(name) or (
                f"this worker has no executor {name!r} (it has: {', '.join(sorted(self.executors))})")
            raise PlanError("executor_unavailable", why)
        return executor.launch(files=files, launch=launch, env=env, attempt=attempt)
