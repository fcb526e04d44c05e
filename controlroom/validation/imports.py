"""What job code imports, and which of those names the job itself provides."""

from __future__ import annotations

import ast
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_MODULE_SUFFIXES = (".py", ".so", ".pyd")
_OPTIONAL = {"ImportError", "ModuleNotFoundError"}


@dataclass(frozen=True)
class Imported:
    """A top-level module name imported at a 1-based line and column."""

    module: str
    line: int
    column: int


def imports_of(tree: ast.Module) -> list[Imported]:
    """Absolute imports the code needs, skipping optional ones (try/except ImportError, TYPE_CHECKING)."""
    return list(_walk(tree.body))


def _walk(body: Iterable[ast.AST]) -> Iterator[Imported]:
    for node in body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Imported(alias.name.partition(".")[0], alias.lineno, alias.col_offset + 1)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield Imported(node.module.partition(".")[0], node.lineno, node.col_offset + 1)
        elif isinstance(node, ast.Try | ast.TryStar) and _guards_imports(node):
            yield from _walk([*node.orelse, *node.finalbody])
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.orelse)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from _walk(children)


def _guards_imports(node: ast.Try | ast.TryStar) -> bool:
    """A try whose handlers catch a failed import: what it imports is optional."""
    for handler in node.handlers:
        if handler.type is None:
            return True
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(_name(k) in _OPTIONAL for k in kinds):
            return True
    return False


def _is_type_checking(test: ast.expr) -> bool:
    return _name(test) == "TYPE_CHECKING"


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def local_modules(paths: Iterable[str], entrypoint: str | None) -> set[str]:
    """Top-level names importable from the job's own files (from its root or the entrypoint's folder)."""
    roots = {""}
    if entrypoint:
        roots.add(posixpath.dirname(posixpath.normpath(entrypoint)))
    names: set[str] = set()
    for path in paths:
        norm = posixpath.normpath(path)
        for root in roots:
            if root and not norm.startswith(root + "/"):
                continue
            first, _, rest = norm[len(root) + 1 if root else 0:].partition("/")
            if rest:
                names.add(first)  # a folder: a package, or a namespace package
            elif first.endswith(_MODULE_SUFFIXES):
                names.add(first.partition(".")[0])
    return names
