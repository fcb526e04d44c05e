"""Which Graphviz renders diagrams: the host's `dot` when it has one, else the bundled port.

`pip install .` brings graphviz-pure (a Rust port of Graphviz 16.1.0, one static program
with its fonts compiled in) into this Python environment's scripts directory, so every worker
can render without a system package. A host Graphviz is still preferred: it is upstream
Graphviz itself, which the operator installed on purpose, and deployments that have it keep
the output they had (docs/jobs.md, "diagram_export", says why and where the port differs).

Standard library only: the runner imports this, and the service's planner and pre-flight
checks ask the same question through it, so all three agree on the program.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

HOST_DOT = "dot"
BUNDLED = "graphviz-pure"
INSTALL_HINT = ("install Graphviz on the worker (apt-get install graphviz, dnf install graphviz, "
                "brew install graphviz); `pip install .` brings it only on Linux x86-64/arm64, "
                "macOS and Windows x64, as the graphviz-pure package")
"""What to do where neither exists: platforms graphviz-pure has no wheel for."""


def bundled_dot() -> str | None:
    """graphviz-pure as installed with this interpreter, or None.

    Looked up beside this environment's scripts, not on the PATH: a job sees the
    environment's prefix (the sandbox exposes it read-only) whatever PATH it was given.
    """
    name = BUNDLED + (".exe" if os.name == "nt" else "")
    program = Path(sysconfig.get_path("scripts")) / name
    return str(program) if program.is_file() and os.access(program, os.X_OK) else None


def dot_program(path: str | None = None) -> str | None:
    """The program to render with: the host's `dot` on `path` (default: $PATH), else the bundled one."""
    return shutil.which(HOST_DOT, path=path) or bundled_dot()


def is_bundled(program: str) -> bool:
    """Whether `program` is graphviz-pure rather than a host Graphviz."""
    return Path(program).stem == BUNDLED
