"""The schema check beyond decoding: what the job type needs, table URIs, connections, tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controlroom.validation.model import Findings, Job
from controlroom.validation.rules import JobRules
from controlroom.validation.uris import TableUri, UriError, parse_uri

TARGET = "spec.target"


@dataclass(frozen=True)
class Named:
    """A connection the request names, in which JSON field, and the table URI if it is one."""

    field: str
    connection: str | None
    uri: TableUri | None = None
    source: bool = False


def shape(job: Job, rules: JobRules, found: Findings) -> list[Named]:
    """Files, entrypoint and target the job type needs; the connections and URIs named."""
    for need in rules.files:
        if not job.with_suffix(*need.suffixes):
            found.error("code.files", f"{job.job_type} needs {need.what} among the code files")
    if rules.python_entrypoint:
        _python_entrypoint(job, found)
    named: list[Named] = []
    for key, uris, need_table in (("inputs", job.inputs, rules.inputs_need_table),
                                  ("outputs", job.outputs, rules.outputs_need_table)):
        for i, text in enumerate(uris):
            field = f"spec.{key}[{i}]"
            try:
                uri = parse_uri(text, table_required=need_table)
            except UriError as e:
                found.error(field, str(e))
                continue
            named.append(Named(field, uri.connection, uri, source=key == "inputs"))
    if rules.needs_target or job.target is not None:
        named += _target(job, named, found)
    return named


def _python_entrypoint(job: Job, found: Findings) -> None:
    if job.entrypoint is not None:
        if not job.entrypoint.endswith(".py"):
            found.error("spec.entrypoint", f"{job.job_type} runs a Python entrypoint; this is not a .py file")
    elif not job.with_suffix(".py"):
        found.error("code.files", f"{job.job_type} runs a Python entrypoint: include a .py file "
                    "(or name one in spec.entrypoint)")


def _target(job: Job, named: list[Named], found: Findings) -> list[Named]:
    if job.target is not None:
        if isinstance(job.target, str) and job.target:
            return [Named(TARGET, job.target)]
        found.error(TARGET, "must be the name of one of the tenant's connections")
        return []
    first_output = next((n for n in named if n.field == "spec.outputs[0]"), None)
    if first_output is None or first_output.connection is None:
        found.error(TARGET, f"{job.job_type} needs a database: set spec.target to a connection name "
                    "(or make the first of spec.outputs a URI such as warehouse://public)")
    return []


def connections(named: Sequence[Named], known: set[str] | None, found: Findings) -> list[Named]:
    """Errors for unknown connections (`known` None: couldn't tell); those whose connection is known."""
    usable: list[Named] = []
    for n in named:
        if n.connection is None:
            continue
        if known is None:
            found.warn(n.field, f"connection {n.connection!r} not checked: "
                       "the tenant's connections could not be read")
        elif n.connection not in known:
            found.error(n.field, f"unknown connection {n.connection!r}"
                        + ("" if known else "; this tenant has no connections"))
        else:
            usable.append(n)
    return usable


def tables(sources: Sequence[Named], exists: Mapping[str, bool | str], found: Findings) -> None:
    """Per source field: True/False from the database, or why it could not be asked (a warning)."""
    for n in sources:
        answer = exists.get(n.field)
        if n.uri is None or answer is None:
            continue
        what = "table" if n.uri.table is not None else "schema"
        if answer is False:
            found.error(n.field, f"{what} {n.uri.entity!r} does not exist in connection {n.connection!r}")
        elif isinstance(answer, str):
            found.warn(n.field, f"{what} {n.uri.entity!r} not checked: {answer}")
