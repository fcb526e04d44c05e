"""External artifacts: files a run registers by reference — the bytes live elsewhere (e.g. in an
object store the job wrote to itself), Control Room keeps their path, URL and what is known.

Reported by an `artifact` run event or by `POST /webhooks/continue`. Recorded on the run as
`ArtifactAdded` with `external: True` and the `url` (events from before kept the same keys).
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import urlsplit
from uuid import NAMESPACE_URL, UUID, uuid5

from controlroom.domain.artifacts.artifact import Artifact
from controlroom.domain.artifacts.paths import RESERVED_PREFIXES, reserved_prefix

MAX_PATH_CHARS = 512
SCHEMES = ("https", "http", "s3", "gs", "az", "abfs", "abfss", "hdfs")
"""URL schemes an external artifact may have: web and object-store locations. No `file:` (a
path on some host nobody else can read) and nothing a browser would run (`javascript:`)."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def external_artifact_id(run_id: UUID, attempt: int, path: str) -> UUID:
    """The id an external artifact of `attempt` at `path` always gets (a retried report
    records the same artifact)."""
    return uuid5(NAMESPACE_URL, f"controlroom:external-artifact:{run_id}:{attempt}:{path}")


def path_problem(path: str) -> str | None:
    """Why `path` can't name an artifact of a run, or None if it can."""
    norm = posixpath.normpath(path)
    if (not path or len(path) > MAX_PATH_CHARS or path.startswith("/") or "\\" in path
            or "\x00" in path or norm.startswith("..") or norm == "."):
        return f"must be a relative path of at most {MAX_PATH_CHARS} characters"
    if (prefix := reserved_prefix(norm)) is not None:
        return (f"{path!r} is under {prefix!r}, reserved for the run's archived code and log "
                f"(reserved: {', '.join(RESERVED_PREFIXES)})")
    return None


def url_problem(url: str) -> str | None:
    """Why `url` can't locate an external artifact, or None if it can."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "must be an absolute URL"
    if parts.scheme.lower() not in SCHEMES or not parts.netloc:
        return f"must be an absolute URL with a scheme among {', '.join(SCHEMES)}"
    return None


def sha256_problem(sha256: str) -> str | None:
    """Why `sha256` is not a SHA-256 digest (64 lowercase hex digits), or None."""
    return None if _SHA256.match(sha256) else "must be 64 lowercase hexadecimal digits"


def path_from_url(url: str) -> str:
    """A path for an artifact known only by its URL: the URL's path (`s3://b/out/r.csv` →
    `out/r.csv`), or its host when the path is empty."""
    parts = urlsplit(url)
    path = posixpath.normpath(parts.path).lstrip("/") if parts.path.strip("/") else ""
    return path if path not in ("", ".") else parts.netloc


def external_artifact(run_id: UUID, attempt: int, *, path: str, url: str,
                      content_type: str | None = None, size: int | None = None,
                      sha256: str | None = None) -> Artifact:
    """An external artifact: its id is the same whenever the attempt reports it again."""
    return Artifact(artifact_id=str(external_artifact_id(run_id, attempt, path)), path=path,
                    attempt=attempt, size=size, sha256=sha256, content_type=content_type, url=url)
