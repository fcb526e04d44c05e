"""What pre-flight validation reads (a Job) and what it answers (a Report of named checks)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from controlroom.domain.lineage.data_flow import DeclarationError, Declared, declared

CHECKS = ("syntax", "schema", "dependencies")
"""Every report names these checks, in this order."""

Severity = Literal["error", "warning"]
"""`error`: the job is refused as it stands; `warning`: it runs, but read this first."""


class Issue(msgspec.Struct, frozen=True):
    """One finding: a file (or a JSON field of the request), 1-based line and column, a message."""

    path: str | None
    line: int | None
    column: int | None
    message: str
    severity: Severity = "error"


class Check(msgspec.Struct):
    """One named check: ok unless it has errors; warnings never make a job invalid.

    `severity` is the gravest of its findings (None when it found nothing); each finding says
    its own too, whichever list it was filed in.
    """

    name: str
    ok: bool
    errors: list[Issue]
    warnings: list[Issue]
    severity: Severity | None = None

    def __post_init__(self) -> None:
        self.errors = [_as(i, "error") for i in self.errors]
        self.warnings = [_as(i, "warning") for i in self.warnings]
        self.severity = "error" if self.errors else "warning" if self.warnings else None


def _as(issue: Issue, severity: Severity) -> Issue:
    return issue if issue.severity == severity else msgspec.structs.replace(issue, severity=severity)


class Report(msgspec.Struct):
    """POST /api/v1/jobs/validate: valid when every check is ok."""

    valid: bool
    checks: list[Check]

    def errors(self) -> list[tuple[str, Issue]]:
        """(check name, issue) for every error, in check order."""
        return [(c.name, e) for c in self.checks for e in c.errors]


@dataclass(frozen=True)
class SourceFile:
    """One code file of the job."""

    path: str
    content: str


@dataclass(frozen=True)
class Job:
    """The parts of a submission that validation looks at."""

    job_type: str
    files: tuple[SourceFile, ...]
    entrypoint: str | None = None
    target: object = None
    """`spec.target` as given (a connection name, if it is valid)."""
    flow: tuple[Declared, ...] = ()
    """The URIs `spec.inputs` / `spec.outputs` declare, each with its JSON field."""
    flow_error: DeclarationError | None = None
    """Why they could not be read, if they are in neither accepted shape."""
    executor: str | None = None
    """`spec.executor`: where the job asked to run."""

    @classmethod
    def of(cls, job_type: str, files: Iterable[Mapping[str, Any]], spec: Mapping[str, Any]) -> Job:
        """From a decoded submission's `job_type`, `code.files` and `spec`."""
        try:
            flow, flow_error = tuple(declared(spec)), None
        except DeclarationError as e:
            flow, flow_error = (), e
        return cls(
            job_type=job_type,
            files=tuple(SourceFile(str(f["path"]), str(f["content"])) for f in files),
            entrypoint=spec.get("entrypoint"),
            target=spec.get("target"),
            flow=flow,
            flow_error=flow_error,
            executor=spec.get("executor"),
        )

    def with_suffix(self, *suffixes: str) -> list[SourceFile]:
        """The files whose name ends with one of `suffixes` (case-insensitive)."""
        return [f for f in self.files if f.path.lower().endswith(suffixes)]


@dataclass
class Findings:
    """Errors and warnings collected while one check runs."""

    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)

    def error(self, path: str | None, message: str, line: int | None = None,
              column: int | None = None) -> None:
        """Record an error."""
        self.errors.append(Issue(path, line, column, message))

    def warn(self, path: str | None, message: str, line: int | None = None,
             column: int | None = None) -> None:
        """Record a warning."""
        self.warnings.append(Issue(path, line, column, message, "warning"))

    def check(self, name: str) -> Check:
        """These findings as the check `name`."""
        return Check(name, not self.errors, list(self.errors), list(self.warnings))


def report(checks: Iterable[Check]) -> Report:
    """A report of `checks`, valid when each is ok."""
    listed = list(checks)
    return Report(valid=all(c.ok for c in listed), checks=listed)


def line_column(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of the 0-based character `index` in `text`."""
    index = max(0, min(index, len(text)))
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1
