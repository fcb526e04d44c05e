"""`artifacts` of `POST /webhooks/continue`: `{path, url, …}` objects or strings, checked and
turned into external artifacts — or refused by name, never accepted and lost.

A string is either an absolute URL (an external artifact whose path is the URL's path) or
the path of an artifact the run already has (uploaded with `POST /api/v1/artifacts`, or
collected from a job's `output/`): that one is on the run already, so nothing is added.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from controlroom.api.problems import invalid
from controlroom.api.webhooks.schemas import ReportedArtifact
from controlroom.commands.webhooks.inbound import ExternalArtifact
from controlroom.domain.artifacts.external import (
    path_from_url,
    path_problem,
    sha256_problem,
    url_problem,
)


def external_artifacts(reported: Sequence[ReportedArtifact | str], known_paths: Collection[str],
                       ) -> list[ExternalArtifact]:
    """The external artifacts to record; 422 naming `artifacts[i]…` for one we can't keep."""
    found: list[ExternalArtifact] = []
    for i, item in enumerate(reported):
        at = f"artifacts[{i}]"
        named = isinstance(item, str)  # a string is named as a whole, an object by its fields
        if isinstance(item, str):
            if "://" not in item:
                if item not in known_paths:
                    raise invalid(at, f"the run has no artifact at {item!r}: upload it first "
                                      "(POST /api/v1/artifacts?run_id=…&path=…), or report "
                                      "{\"path\", \"url\"} (or its URL) for a file kept elsewhere")
                continue
            item = ReportedArtifact(path=path_from_url(item), url=item)
        for field, problem in (("url", url_problem(item.url)), ("path", path_problem(item.path)),
                               ("sha256", item.sha256 and sha256_problem(item.sha256))):
            if problem:
                raise invalid(at if named else f"{at}.{field}", problem)
        found.append(ExternalArtifact(path=item.path, url=item.url,
                                      content_type=item.content_type, size=item.size,
                                      sha256=item.sha256))
    return found
