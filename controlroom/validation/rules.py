"""Which checks demand what of each job type: data, read by the checks, not ifs inside them."""

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
    """A database to work on: `spec.target` (a connection name), else the first output's connection."""


SYNTAX_PARSERS: dict[str, str] = {".py": "python", ".sql": "sql", ".dot": "dot", ".gv": "dot"}
"""File suffix → the syntax check's parser; other files are not parsed."""

JOB_RULES: dict[str, JobRules] = {
    "spark_etl": JobRules(
        python_entrypoint=True,
        # spark-submit is optional (without it the job runs as plain Python, and PySpark launches
        # itself); what code importing pyspark can't run without is a Java VM.
        tools=(ToolNeeded("java", "PySpark runs on a Java VM", when_imports="pyspark"),),
    ),
    "schema_migration": JobRules(
        files=(FilesNeeded((".sql",), "a .sql migration"),), outputs_need_table=False, needs_target=True,
    ),
    "diagram_export": JobRules(
        files=(FilesNeeded((".dot", ".gv"), "a Graphviz .dot or .gv source"),),
        tools=(ToolNeeded("dot", "Graphviz renders the diagrams"),),
    ),
    "kb_catalog": JobRules(inputs_need_table=False),
}

DEFAULT_RULES = JobRules()
"""For a job type this table does not know yet: the generic checks only."""


def rules_for(job_type: str) -> JobRules:
    """The rules of `job_type`."""
    return JOB_RULES.get(job_type, DEFAULT_RULES)
