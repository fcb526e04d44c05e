"""What validation needs from the outside world: tools on the worker and the tenant's databases.

The adapters live in `controlroom.adapters.runs.preflight`; connections come through
`controlroom.commands.ports.Connections`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Tools(Protocol):
    """Programs of the worker environment."""

    def which(self, tool: str) -> str | None:
        """Where `tool` is (or the stand-in installed with Control Room), None if the worker lacks it."""
        ...

    def parse_dot(self, source: str) -> tuple[int, str] | None:
        """Exit code and stderr of Graphviz's own parser on `source`; None if Graphviz is absent.

        TimeoutError when it takes too long.
        """
        ...


class Tables(Protocol):
    """Looks tables up in a database (blocking; called off the event loop)."""

    def exist(self, dsn: str, names: Sequence[tuple[str, str | None]]) -> list[bool]:
        """Whether each (schema, table) exists (table None: the schema); raises if unreachable."""
        ...
