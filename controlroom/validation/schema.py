"""The schema check beyond decoding: what the job type needs, table URIs, connections, tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from controlroom.validation.model import Findings, Job
from controlroom.validation.rules import JobRules
from controlroom.validation.uris import TableUri, UriError, connection_env, parse_uri

TARGET = "spec.target"


@dataclass(frozen=True)
class Named:
    """A connection the request names, in which JSON field, and the table URI if it is one."""

    field: str
    connection: str | None
    uri: TableUri | None = None
    source: bool = False
    needed: bool = False
    """The job type connects through it to run at all: unknown, it is an error (else a warning)."""


def shape(job: Job, rules: JobRules, found: Findings) -> list[Named]:
    """Files, entrypoint and target the job type needs; the connections and URIs named."""
    for need in rules.files:
        if not job.with_suffix(*need.suffixes):
            found.error("code.files", f"{job.job_type} needs {need.what} among the code files")
    if rules.python_entrypoint:
        _python_entrypoint(job, found)
    if job.flow_error is not None:
        found.error(job.flow_error.field, job.flow_error.message)
    named: list[Named] = []
    for item in job.flow:
        try:
            uri = parse_uri(item.uri, table_required=rules.outputs_need_table if item.written
                            else rules.inputs_need_table)
        except UriError as e:
            found.error(item.field, str(e))
            continue
        named.append(Named(item.field, uri.connection, uri, source=not item.written,
                           needed=rules.connects_inputs and not item.written))
    if rules.needs_target or job.target is not None:
        named = _target(job, rules, named, found)
    return named


def _python_entrypoint(job: Job, found: Findings) -> None:
    if job.entrypoint is not None:
        if not job.entrypoint.endswith(".py"):
            found.error("spec.entrypoint", f"{job.job_type} runs a Python entrypoint; this is not a .py file")
    elif not job.with_suffix(".py"):
        found.error("code.files", f"{job.job_type} runs a Python entrypoint: include a .py file "
                    "(or name one in spec.entrypoint)")


def _target(job: Job, rules: JobRules, named: list[Named], found: Findings) -> list[Named]:
    """`named` with the database the job works on: `spec.target`, else the first URI written."""
    if job.target is not None:
        if isinstance(job.target, str) and job.target:
            return [*named, Named(TARGET, job.target, needed=rules.needs_target)]
        found.error(TARGET, "must be the name of one of the tenant's connections")
        return named
    first_written = next((d.field for d in job.flow if d.written), None)
    first_output = next((n for n in named if n.field == first_written), None)
    if first_output is None or first_output.connection is None:
        found.error(TARGET, f"{job.job_type} needs a database: set spec.target to a connection name "
                    "(or make the first of spec.outputs a URI such as warehouse://public)")
        return named
    return [replace(n, needed=True) if n is first_output else n for n in named]


def connections(job_type: str, named: Sequence[Named], known: set[str] | None,
                found: Findings) -> list[Named]:
    """Unknown connections found (`known` None: couldn't tell); those whose connection is known.

    An unknown connection is an error only where the job type connects through it to run;
    elsewhere it names data the job's own code reaches (and lineage records): a warning.
    """
    usable: list[Named] = []
    for n in named:
        if n.connection is None:
            continue
        if known is None:
            found.warn(n.field, f"connection {n.connection!r} not checked: "
                       "the tenant's connections could not be read")
        elif n.connection in known:
            usable.append(n)
        elif n.needed:
            found.error(n.field, f"unknown connection {n.connection!r}"
                        + ("" if known else "; this tenant has no connections")
                        + f": {job_type} connects to it before it can run. {configure(n.connection)}")
        else:
            found.warn(n.field, f"connection {n.connection!r} is not configured for this tenant: "
                       f"the job runs without ${connection_env(n.connection)} and its tables are "
                       f"not checked (lineage still records them). {configure(n.connection)}")
    return usable


def configure(name: str) -> str:
    """How to create connection `name`."""
    return (f"An admin configures it with PUT /api/v1/connections/{name} "
            '{"dsn": "postgresql://user:password@host:5432/db"}.')


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
