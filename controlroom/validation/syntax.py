"""The syntax check: Python with `ast`, SQL with pglast (PostgreSQL's parser), DOT with Graphviz."""

from __future__ import annotations

import ast
import re
import warnings

import pglast

from controlroom.validation.model import Findings, Job, SourceFile, line_column
from controlroom.validation.rules import SYNTAX_PARSERS

JOB_FILENAME = "<job>/"
"""Prefix of the filename Python parses job code under (its SyntaxWarnings are not ours to log)."""
_GRAPHVIZ = re.compile(r"^(?P<level>Error|Warning): (?:<stdin>: )?(?P<message>.*)$")
_IN_LINE = re.compile(r" in line (?P<line>\d+)(?: of \S+)?")
_NEAR = re.compile(r"near '(?P<near>.*)'$")

warnings.filterwarnings("ignore", module=re.escape(JOB_FILENAME))


def python_trees(job: Job, found: Findings) -> dict[str, ast.Module]:
    """The AST of each Python file that parses; an error for each that doesn't."""
    trees: dict[str, ast.Module] = {}
    for f in job.files:
        if parser_of(f.path) != "python":
            continue
        try:
            trees[f.path] = ast.parse(f.content, filename=JOB_FILENAME + f.path)
        except SyntaxError as e:
            found.error(f.path, e.msg, e.lineno, e.offset or None)
        except (MemoryError, RecursionError, ValueError):
            found.error(f.path, "too deeply nested or too large for Python to parse")
    return trees


def sql_errors(f: SourceFile, found: Findings) -> None:
    """Parse one SQL file; an error at PostgreSQL's error cursor if it doesn't parse."""
    try:
        pglast.parse_sql(f.content)
    except pglast.parser.ParseError as e:
        message, index = e.args[0], e.args[1] if len(e.args) > 1 else None
        line, column = line_column(f.content, len(f.content) if index is None else index)
        found.error(f.path, message, line, column)
    except Exception as e:  # the parser's other failures still answer, never crash a request
        found.error(f.path, f"SQL could not be parsed: {type(e).__name__}")


def dot_errors(f: SourceFile, exit_code: int, stderr: str, found: Findings) -> None:
    """Graphviz's messages about one file as errors and warnings, positioned where it says."""
    reported = False
    for raw in stderr.splitlines():
        m = _GRAPHVIZ.match(raw.strip())
        if m is None:
            continue
        at, near = _IN_LINE.search(m["message"]), _NEAR.search(m["message"])
        line = int(at["line"]) if at else None
        message = _IN_LINE.sub("", m["message"], count=1)
        column = _column_of(f.content, line, near["near"] if near else None)
        if m["level"] == "Error":
            found.error(f.path, message, line, column)
            reported = True
        else:
            found.warn(f.path, message, line, column)
    if exit_code != 0 and not reported:
        first = next((s for s in stderr.splitlines() if s.strip()), "no message")
        found.error(f.path, f"Graphviz could not read it: {first.strip()}")


def _column_of(text: str, line: int | None, near: str | None) -> int | None:
    """Graphviz names a line and the token near the error; the token's first place on it."""
    if line is None or not near:
        return None
    lines = text.splitlines()
    if not 0 < line <= len(lines):
        return None
    at = lines[line - 1].find(near)
    return at + 1 if at >= 0 else None


def _suffix(path: str) -> str:
    dot = path.rfind(".")
    return path[dot:].lower() if dot > path.rfind("/") else ""


def parser_of(path: str) -> str | None:
    """Which parser the syntax check uses for `path` (None: not parsed)."""
    return SYNTAX_PARSERS.get(_suffix(path))
