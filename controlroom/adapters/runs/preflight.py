"""What pre-flight validation asks of the world: the worker's tools and the tenants' databases."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

import psycopg

from controlroom.runners.graphviz import HOST_DOT, bundled_dot

DOT_PARSE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3
"""libpq's connect_timeout (whole seconds, at least 2)."""
STATEMENT_TIMEOUT = "2s"
GRAPHVIZ_PARSER = ("nop", "-p")
"""Graphviz's own reader (cgraph) with no layout: `dot -Tcanon` lays the graph out too
(4.9 s against nop's 7 ms on a 3,000-edge graph)."""
BUNDLED_PARSER_ARGS = ("-Kosage", "-Tcanon")
"""graphviz-pure has no `nop`: its port of cgraph's reader (the same messages) is followed by
osage, the cheapest layout (0.1 s on a random 3,000-edge graph that its `dot` layout takes over
a minute on), whose output is thrown away."""
BUNDLED_LAYOUT_NOISE = ("no hard-coded metrics for", "no value for width of")
"""graphviz-pure's warnings about estimating text widths: about the layout, not the source."""


def bundled_tools() -> dict[str, str]:
    """PATH tools this Python environment ships a stand-in for: `dot` as graphviz-pure."""
    program = bundled_dot()
    return {HOST_DOT: program} if program else {}


class LocalTools:
    """Programs on this machine's PATH (the worker's, in every shipped deployment), and the
    stand-ins installed with Control Room for those the PATH lacks (`bundled`)."""

    def __init__(self, path: str | None = None, bundled: Mapping[str, str] | None = None) -> None:
        self._path = path
        self.bundled = dict(bundled_tools() if bundled is None else bundled)

    @property
    def path(self) -> str:
        """The given PATH, else the process's as it is now: the one the jobs it checks will get."""
        return os.environ.get("PATH", os.defpath) if self._path is None else self._path

    def which(self, tool: str) -> str | None:
        """Where `tool` is on the PATH, else its bundled stand-in, else None."""
        return shutil.which(tool, path=self.path) or self.bundled.get(tool)

    def parse_dot(self, source: str) -> tuple[int, str] | None:
        """Exit code and stderr of Graphviz's reader on `source`; None without Graphviz.

        The host's `nop -p` when it has Graphviz, else graphviz-pure's (the one that renders
        there: the runner prefers the host's `dot` the same way).
        """
        command, noise = self._dot_parser()
        if command is None:
            return None
        try:
            done = subprocess.run(
                command, input=source.encode(errors="replace"),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=DOT_PARSE_TIMEOUT_S,
                env={"PATH": self.path, "LC_ALL": "C"}, check=False,
            )
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"Graphviz took over {DOT_PARSE_TIMEOUT_S:g} s") from None
        stderr = done.stderr.decode(errors="replace")
        if noise:
            stderr = "".join(line for line in stderr.splitlines(keepends=True)
                             if not any(n in line for n in noise))
        return done.returncode, stderr

    def _dot_parser(self) -> tuple[list[str] | None, tuple[str, ...]]:
        """The command that reads DOT here, and the stderr lines of it to drop."""
        nop = shutil.which(GRAPHVIZ_PARSER[0], path=self.path)
        if nop is not None:
            return [nop, *GRAPHVIZ_PARSER[1:]], ()
        bundled = self.bundled.get(HOST_DOT)
        if bundled is None:
            return None, ()
        return [bundled, *BUNDLED_PARSER_ARGS], BUNDLED_LAYOUT_NOISE


class PostgresTables:
    """Asks a tenant's database whether tables exist (one short connection per lookup)."""

    def exist(self, dsn: str, names: Sequence[tuple[str, str | None]]) -> list[bool]:
        """Whether each (schema, table) exists; (schema, None): whether the schema does."""
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, prepare_threshold=None) as conn:
            conn.execute("SELECT set_config('statement_timeout', %s, true)", [STATEMENT_TIMEOUT])
            found = []
            for schema, table in names:
                if table is None:
                    query = "SELECT to_regnamespace(format('%%I', %s::text)) IS NOT NULL"
                    row = conn.execute(query, [schema]).fetchone()
                else:
                    query = "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL"
                    row = conn.execute(query, [schema, table]).fetchone()
                found.append(bool(row and row[0]))
            conn.rollback()
            return found
