"""POST /api/v1/jobs/validate — pre-flight checks that run nothing; the same gate guards submit."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from litestar import Request, post

from controlroom.api.auth import Principal, requires
from controlroom.api.deps import Deps
from controlroom.api.problems import ProblemError
from controlroom.api.runs.submission import callbacks_of, checked
from controlroom.api.views import API
from controlroom.api.webhooks.routes import check_callbacks
from controlroom.commands.messages import SubmitJob
from controlroom.validation import Issue, Job, Report, undecodable
from controlroom.validation.model import line_column

_AT_BYTE = re.compile(r"\(byte (\d+)\)")


@post(f"{API}/jobs/validate", guards=[requires("jobs:write")], status_code=200)
async def validate_job(request: Request[Principal, str, Any]) -> Report:
    """Check a job as submit would — syntax, schema, dependencies — without running or recording it."""
    deps: Deps = request.app.state.deps
    body = await request.body()
    try:
        sub, raw = checked(body)
        await check_callbacks(request, callbacks_of(sub))  # the SSRF guard submit applies
    except ProblemError as e:
        return undecodable(schema_issues(e, body))
    job = Job.of(sub.job_type, msgspec.to_builtins(sub.code.files), raw.get("spec") or {})
    return await deps.preflight.validate(job, request.user.tenant_id)


async def ensure_valid(deps: Deps, cmd: SubmitJob) -> None:
    """Run the pre-flight checks on a submission; a 422 listing every error if it fails them."""
    files = cmd.code["files"]
    report = await deps.preflight.validate(Job.of(cmd.job_type, files, cmd.spec), cmd.tenant_id)
    if not report.valid:
        raise rejection(report, (f["path"] for f in files))


def rejection(report: Report, paths: Iterable[str]) -> ProblemError:
    """The 422 for a failed report: its errors, each with its check and the JSON field it is in."""
    index = {path: i for i, path in enumerate(paths)}
    errors: list[dict[str, Any]] = [
        {"field": _field(issue.path, index), "check": check, **msgspec.structs.asdict(issue)}
        for check, issue in report.errors()
    ]
    first = errors[0]
    where = ":".join(str(p) for p in (first["path"], first["line"], first["column"]) if p is not None)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ProblemError(422, "Validation failed",
                        f"the job failed pre-flight validation: {where}: {first['message']}{more}",
                        errors=errors)


def schema_issues(problem: ProblemError, body: bytes) -> list[Issue]:
    """A request that did not decode, as the schema check's issues (a JSON field, no position)."""
    if problem.errors:
        return [Issue(str(e.get("field") or "body"), None, None, str(e.get("message")))
                for e in problem.errors]
    line = column = None
    if at := _AT_BYTE.search(problem.detail):
        before = body[: int(at[1])].decode(errors="replace")
        line, column = line_column(before, len(before))
    return [Issue("body", line, column, problem.detail)]


def _field(path: str | None, files: Mapping[str, int]) -> str:
    """The request field an issue is in: a code file's content, else the path is the field."""
    if path is not None and path in files:
        return f"code.files[{files[path]}].content"
    return path or "body"
