"""The dependencies check: imports resolvable on the worker (or declared), tools the job type needs."""

from __future__ import annotations

import ast
import importlib.util
import posixpath
import sys
from collections.abc import Collection

from controlroom.validation.imports import Imported, imports_of, local_modules
from controlroom.validation.model import Findings, Job
from controlroom.validation.ports import Tools
from controlroom.validation.requirements import REQUIREMENTS_FILE, Declared, parse_requirements
from controlroom.validation.rules import JobRules


def installed(module: str) -> bool:
    """Whether the worker environment (this interpreter) can import top-level `module`."""
    if module in sys.builtin_module_names:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: in sys.modules without a spec (e.g. __main__)
        return module in sys.modules


def declared(job: Job, found: Findings) -> set[str]:
    """Import names the job's requirements.txt files declare; errors for lines that don't parse."""
    modules: set[str] = set()
    for f in job.files:
        if posixpath.basename(f.path) != REQUIREMENTS_FILE:
            continue
        parsed: Declared = parse_requirements(f.content)
        modules |= parsed.modules
        for line, column, message in parsed.problems:
            found.error(f.path, f"invalid requirement: {message}", line, column)
    return modules


def check(job: Job, rules: JobRules, trees: dict[str, ast.Module], tools: Tools,
          found: Findings) -> None:
    """Record unresolvable imports and missing tools in `found`."""
    available = local_modules((f.path for f in job.files), job.entrypoint) | declared(job, found)
    imported: dict[str, tuple[str, Imported]] = {}
    for path, tree in trees.items():
        for imp in imports_of(tree):
            imported.setdefault(imp.module, (path, imp))
            if imp.module not in available and not installed(imp.module):
                found.error(path, f"module {imp.module!r} is not installed on the worker, not among "
                            f"the code files and not in a {REQUIREMENTS_FILE}", imp.line, imp.column)
    for need in rules.tools:
        if need.when_imports is not None and need.when_imports not in imported:
            continue
        if tools.which(need.tool) is not None:
            continue
        message = f"{need.tool} is not installed on the worker ({need.why})"
        if need.install:
            message += f": {need.install}"
        if need.when_imports is not None:
            path, imp = imported[need.when_imports]
            found.error(path, message, imp.line, imp.column)
        else:
            found.error("job_type", message)


EXECUTOR = "spec.executor"


def executor(job: Job, available: Collection[str], default: str, found: Findings) -> None:
    """An error when the job would run on an executor the deployment does not have."""
    chosen = job.executor or default
    if chosen in available:
        return
    how = "set CONTROLROOM_K8S_NAMESPACE" if chosen == "kubernetes" else "configure it"
    which = "" if job.executor else " (the default executor, CONTROLROOM_EXECUTOR)"
    found.error(EXECUTOR, f"{chosen}{which} is not configured on this deployment: {how}; "
                f"available: {', '.join(sorted(available))}")
