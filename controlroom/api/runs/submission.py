"""Turning a submitted body into a SubmitJob command: decode, check, fingerprint."""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any

import msgspec

from controlroom.api.auth import Principal
from controlroom.api.gate.json_body import MAX_DEPTH, too_deep
from controlroom.api.problems import ProblemError, from_decode_error, invalid
from controlroom.api.schemas import JobSubmission
from controlroom.commands.messages import SubmitJob

MAX_IDEMPOTENCY_KEY = 255
_decode_submission = msgspec.json.Decoder(JobSubmission)
_decode_raw = msgspec.json.Decoder(dict[str, Any])
_canonical = msgspec.json.Encoder(order="sorted")


def decode(body: bytes) -> tuple[JobSubmission, dict[str, Any]]:
    """The typed submission and the raw body (to keep spec keys we don't model)."""
    if not body:
        raise ProblemError(400, "Malformed JSON", "request body is empty; expected a JSON object")
    try:
        raw = _decode_raw.decode(body)  # first, so that malformed JSON is a 400, not a 422
        check_storable(raw)
        return _decode_submission.decode(body), raw
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise from_decode_error(e) from None
    except RecursionError:
        raise too_deep() from None


def check_storable(value: Any, path: str = "", depth: int = 0) -> None:
    """Reject what Postgres can't store in text/jsonb (NUL characters) and deep nesting."""
    if depth > MAX_DEPTH:
        raise too_deep()
    if isinstance(value, str):
        if "\x00" in value:
            raise invalid(path or "body", "must not contain NUL (\\u0000) characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise invalid(path or "body", "keys must not contain NUL (\\u0000) characters")
            check_storable(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_storable(item, f"{path}[{i}]", depth + 1)


def _check_paths(sub: JobSubmission) -> None:
    seen: set[str] = set()
    for i, f in enumerate(sub.code.files):
        norm = posixpath.normpath(f.path)
        if f.path.startswith("/") or "\\" in f.path or norm.startswith("..") or norm == ".":
            raise invalid(f"code.files[{i}].path", "must be a relative path inside the job")
        if norm in seen:
            raise invalid(f"code.files[{i}].path", f"duplicate path {f.path!r}")
        seen.add(norm)
    for i, f in enumerate(sub.code.files):
        parent = posixpath.dirname(posixpath.normpath(f.path))
        while parent:
            if parent in seen:
                raise invalid(f"code.files[{i}].path", f"{f.path!r} is inside {parent!r}, also a file")
            parent = posixpath.dirname(parent)
    entry = sub.spec.entrypoint
    if entry is not None and entry not in {f.path for f in sub.code.files}:
        raise invalid("spec.entrypoint", f"{entry!r} is not one of the code files")


def _check_aliases(sub: JobSubmission) -> None:
    """A field sent under both of its names must say the same under each (else it's refused)."""
    text, description = sub.spec.text, sub.spec.description
    if text is not None and description is not None and text != description:
        raise invalid("spec.description", "differs from spec.text: they are one field "
                      "(`text` is the PRD's name, `description` its alias); send one")
    if sub.repo is None:
        return
    for name, top, inside in (("url", sub.repo.url, sub.code.repo), ("ref", sub.repo.ref, sub.code.ref)):
        if top is not None and inside is not None and top != inside:
            raise invalid(f"repo.{name}", f"differs from code.{'repo' if name == 'url' else 'ref'}: "
                          "they are one field (top-level `repo` is the PRD's form); send one")


def code_of(sub: JobSubmission) -> dict[str, Any]:
    """`code` as stored: the top-level `repo {url, ref}` folded into `code.repo` / `code.ref`."""
    code: dict[str, Any] = msgspec.to_builtins(sub.code)
    if sub.repo is not None:
        code["repo"] = code.get("repo") or sub.repo.url
        code["ref"] = code.get("ref") or sub.repo.ref
    return code


def job_name_of(sub: JobSubmission) -> str:
    """`spec.job_name`, else a stable name from job type, repo and entrypoint."""
    if sub.spec.job_name:
        return sub.spec.job_name
    entry = sub.spec.entrypoint or next(
        (f.path for f in sub.code.files if f.path.endswith(".py")), sub.code.files[0].path
    )
    return f"{sub.job_type}:{code_of(sub).get('repo') or 'inline'}:{entry}"


def checked(body: bytes) -> tuple[JobSubmission, dict[str, Any]]:
    """Decode a submission and check its paths and aliases (ProblemError if any fails)."""
    sub, raw = decode(body)
    _check_paths(sub)
    _check_aliases(sub)
    return sub, raw


def callbacks_of(sub: JobSubmission) -> dict[str, str]:
    """The callback URLs a submission sets, by event (`on_complete`, `on_fail`, ...)."""
    return {k: v for k, v in msgspec.to_builtins(sub.callbacks).items() if v}


def _as_schema_check(e: ProblemError) -> ProblemError:
    """Errors of a 422 in the pre-flight form too: the schema check, at a field, no position."""
    if e.status == 422 and e.errors:
        e.errors = [{**err, "check": "schema", "path": err.get("field") or "body", "line": None,
                     "column": None, "severity": "error"} for err in e.errors]
    return e


def command(
    body: bytes, principal: Principal, idempotency_key: str | None
) -> SubmitJob:
    """The SubmitJob for a request; ProblemError if the request is not acceptable."""
    try:
        sub, raw = checked(body)
    except ProblemError as e:
        raise _as_schema_check(e) from None
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise invalid("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    spec = dict(raw.get("spec") or {})
    spec.pop("secrets", None)
    spec["secret_names"] = sorted(sub.spec.secrets)
    fingerprint = {**raw, "spec": {**spec, "secrets": sorted(sub.spec.secrets)}}
    return SubmitJob(
        tenant_id=principal.tenant_id,
        created_by=principal.sub,
        client=sub.created_by,
        job_type=sub.job_type,
        code=code_of(sub),
        spec=spec,
        secrets=dict(sub.spec.secrets),
        timeout_s=sub.timeout_s,
        max_retries=sub.max_retries,
        labels=dict(sub.labels),
        callbacks=callbacks_of(sub),
        job_name=job_name_of(sub),
        request_hash=hashlib.sha256(_canonical.encode(fingerprint)).hexdigest(),
        idempotency_key=idempotency_key,
    )
