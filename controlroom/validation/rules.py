"""What a job type demands of a job before it runs: data each job type declares, read by the
checks (not ifs inside them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FilesNeeded:
    """At least one code file with one of these suffixes."""

    suffixes: tuple[str, ...]
    what: str


@dataclass(frozen=True)
class ToolNeeded:
    """A program the worker must have on its PATH (only when the code imports `when_imports`)."""

    tool: str
    why: str
    when_imports: str | None = None
    install: str | None = None
    """How to get it, said with the error: where `pip install .` can't bring it."""


@dataclass(frozen=True)
class JobRules:
    """What the schema and dependencies checks demand of one job type."""

    python_entrypoint: bool = False
    files: tuple[FilesNeeded, ...] = ()
    tools: tuple[ToolNeeded, ...] = ()
    inputs_need_table: bool = True
    """False where an input may name a whole schema (kb_catalog catalogs one)."""
    outputs_need_table: bool = True
    needs_target: bool = False
    """A database to work on: `spec.target` (a connection name), else the first output's connection;
    the job type connects to it, so an unknown one is an error."""
    connects_inputs: bool = False
    """The job type itself connects to what `spec.inputs` name (not just the job's code): an
    input through an unknown connection is an error, not a warning."""


SYNTAX_PARSERS: dict[str, str] = {".py": "python", ".sql": "sql", ".dot": "dot", ".gv": "dot"}
"""File suffix → the syntax check's parser; other files are not parsed."""

DEFAULT_RULES = JobRules()
"""For a job type no plugin declares: the generic checks only."""

