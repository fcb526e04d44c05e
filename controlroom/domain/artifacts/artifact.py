"""An artifact of a run: a file whose bytes are in the artifact store (or, external, elsewhere).

`ArtifactAdded` keeps an artifact as a JSON object of these fields, in the shape and key order
it has always had, so that events already in the log load as they are and new ones are
written alike: `fields()` is that object, `from_fields()` reads one back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """What a run records of one of its files (metadata only)."""

    artifact_id: str
    path: str
    attempt: int = 1
    """The run's attempt that made it (1 in events from before attempts were recorded)."""
    size: int | None = None
    sha256: str | None = None
    content_type: str | None = None
    url: str | None = None
    """Where the bytes are, for an external artifact; None when the store holds them."""

    @property
    def external(self) -> bool:
        """Registered by reference: Control Room keeps where it is, not its bytes."""
        return self.url is not None

    def fields(self) -> dict[str, Any]:
        """The `ArtifactAdded` event's `artifact` object.

        A stored artifact names every field; an external one only what is known of it.
        """
        if self.url is None:
            return {"artifact_id": self.artifact_id, "path": self.path, "size": self.size,
                    "sha256": self.sha256, "content_type": self.content_type,
                    "attempt": self.attempt}
        known = {"content_type": self.content_type, "size": self.size, "sha256": self.sha256}
        return {"artifact_id": self.artifact_id, "path": self.path, "url": self.url,
                "external": True, "attempt": self.attempt,
                **{k: v for k, v in known.items() if v is not None}}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> Artifact | None:
        """The artifact an event's object describes; None if it lacks an id or a path (a log
        may hold such events: readers show them as they can, never fail on them)."""
        artifact_id, path = fields.get("artifact_id"), fields.get("path")
        if artifact_id is None or path is None:
            return None
        url = fields.get("url")
        return cls(artifact_id=str(artifact_id), path=str(path),
                   attempt=int(fields.get("attempt") or 1), size=fields.get("size"),
                   sha256=fields.get("sha256"), content_type=fields.get("content_type"),
                   url=url if fields.get("external") and isinstance(url, str) else None)
