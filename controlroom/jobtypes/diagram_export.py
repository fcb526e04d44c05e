"""diagram_export: Graphviz `.dot`/`.gv` sources rendered to SVG and PNG under `output/`.

Mermaid sources (`.mmd`, `.mermaid`) need a headless browser to render, which a worker
can't be assumed to have offline: they are listed as skipped in the log, never rendered.
Graphviz is the host's `dot` or, without one, graphviz-pure installed with Control Room
(`controlroom.runners.graphviz`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from controlroom.commands.ports import PYTHON, JobContext, Launch, PlanError
from controlroom.runners.graphviz import INSTALL_HINT, dot_program
from controlroom.validation import FilesNeeded, JobRules, ToolNeeded

RUNNER = "controlroom.runners.diagram_export"
SOURCES_ENV = "CONTROLROOM_DIAGRAMS"
SKIPPED_ENV = "CONTROLROOM_DIAGRAMS_SKIPPED"
GRAPHVIZ_SUFFIXES = (".dot", ".gv")
MERMAID_SUFFIXES = (".mmd", ".mermaid")


@dataclass(frozen=True)
class DiagramExport:
    """Plans a diagram_export attempt."""

    find_dot: Callable[[], str | None] = field(default=dot_program)
    name: str = "diagram_export"
    rules: ClassVar[JobRules] = JobRules(
        files=(FilesNeeded((".dot", ".gv"), "a Graphviz .dot or .gv source"),),
        tools=(ToolNeeded("dot", "Graphviz renders the diagrams", install=INSTALL_HINT),),
    )

    def plan(self, ctx: JobContext) -> Launch:
        """Render every Graphviz source, in path order."""
        sources = sorted(p for p in ctx.files if p.lower().endswith(GRAPHVIZ_SUFFIXES))
        skipped = sorted(p for p in ctx.files if p.lower().endswith(MERMAID_SUFFIXES))
        if not sources:
            hint = " (Mermaid can't be rendered offline here)" if skipped else ""
            raise PlanError("no_diagrams", f"no Graphviz .dot or .gv files among the code files{hint}")
        if self.find_dot() is None:
            raise PlanError("missing_tool", f"Graphviz is not installed on this worker: {INSTALL_HINT}")
        env = {SOURCES_ENV: json.dumps(sources), SKIPPED_ENV: json.dumps(skipped)}
        return Launch(argv=[PYTHON, "-I", "-u", "-m", RUNNER], env=env)
