"""An aggregate's `@event("Name")` methods and the event classes it declares for type checking
name the same events with the same fields (the declarations never run, so only this holds
them to the methods)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "controlroom" / "domain"


def _event_name(method: ast.FunctionDef) -> str | None:
    for d in method.decorator_list:
        if (isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "event"
                and d.args and isinstance(d.args[0], ast.Constant)):
            return str(d.args[0].value)
    return None


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and (
        node.test.id == "TYPE_CHECKING")


def _fields_of_method(method: ast.FunctionDef) -> list[tuple[str, str, str | None]]:
    args = method.args.args[1:]  # self
    defaults: list[ast.expr | None] = [None] * (len(args) - len(method.args.defaults))
    defaults += method.args.defaults
    return [(a.arg, ast.unparse(a.annotation) if a.annotation else "",
             ast.unparse(d) if d is not None else None) for a, d in zip(args, defaults, strict=True)]


def _fields_of_class(cls: ast.ClassDef) -> list[tuple[str, str, str | None]]:
    return [(s.target.id, ast.unparse(s.annotation), ast.unparse(s.value) if s.value else None)
            for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]


def _aggregates() -> list[tuple[str, ast.ClassDef]]:
    found = []
    for path in sorted(DOMAIN.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id == "Aggregate" for b in node.bases):
                found.append((f"{path.stem}.{node.name}", node))
    return found


def test_there_are_aggregates_to_check() -> None:
    assert len(_aggregates()) >= 5


@pytest.mark.parametrize(("name", "aggregate"), _aggregates(), ids=[n for n, _ in _aggregates()])
def test_declared_events_match_the_event_methods(name: str, aggregate: ast.ClassDef) -> None:
    methods = {
        event: _fields_of_method(node) for node in aggregate.body
        if isinstance(node, ast.FunctionDef) and (event := _event_name(node))
    }
    declared = {
        cls.name: _fields_of_class(cls)
        for block in aggregate.body if _is_type_checking(block)
        for cls in block.body if isinstance(cls, ast.ClassDef)
    }
    assert declared == methods
