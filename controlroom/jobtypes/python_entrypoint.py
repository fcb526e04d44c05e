"""Runs the submission's Python entrypoint with the worker's interpreter."""

from __future__ import annotations

from dataclasses import dataclass

from controlroom.commands.ports import PYTHON, JobContext, Launch
from controlroom.jobtypes.base import require_entrypoint


@dataclass(frozen=True)
class PythonEntrypoint:
    """`python -u <entrypoint>` in the job's directory."""

    name: str

    def plan(self, ctx: JobContext) -> Launch:
        """Run the entrypoint unbuffered so its output streams as it happens."""
        return Launch(argv=[PYTHON, "-u", require_entrypoint(ctx)])
