"""What a run declares it reads and writes (`spec.inputs`, `spec.outputs`), and the lineage
that declaration implies.

`spec.inputs` comes in two shapes: a list of URIs (each one read), or the PRD's object of
role → URI (`{"source": …, "target": …}`), in which the `target` role is written and every
other role is read. `spec.outputs` is a list of URIs written. When a run completes, an edge
runs from every URI read to every URI written — for any job type, whether or not the job
itself reports lineage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

WRITTEN_ROLES = frozenset({"target"})
"""Roles of the object form of `spec.inputs` that name what the job writes."""


class DeclarationError(ValueError):
    """`spec.inputs` / `spec.outputs` are not in either accepted shape, at `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Declared:
    """One URI the spec names: in which JSON field, and whether the job writes it."""

    field: str
    """`spec.inputs[0]`, `spec.inputs.source`, `spec.outputs[1]`."""
    uri: str
    written: bool


def declared(spec: Mapping[str, Any]) -> list[Declared]:
    """Every URI of `spec.inputs` and `spec.outputs`, in the order given."""
    found: list[Declared] = []
    inputs = spec.get("inputs") or []
    if isinstance(inputs, Mapping):
        for role, uri in inputs.items():
            found.append(Declared(f"spec.inputs.{role}", _uri(f"spec.inputs.{role}", uri),
                                  written=role in WRITTEN_ROLES))
    else:
        found += _listed("inputs", inputs, written=False)
    return found + _listed("outputs", spec.get("outputs") or [], written=True)


def _listed(key: str, values: Any, *, written: bool) -> list[Declared]:
    if not isinstance(values, list):
        raise DeclarationError(f"spec.{key}", "must be a list of table URIs"
                               + (" or an object of role → URI" if key == "inputs" else ""))
    return [Declared(f"spec.{key}[{i}]", _uri(f"spec.{key}[{i}]", v), written=written)
            for i, v in enumerate(values)]


def _uri(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise DeclarationError(field, "must be a table URI (a string)")
    return value


def read(spec: Mapping[str, Any]) -> list[Declared]:
    """The URIs the spec says the job reads."""
    return [d for d in declared(spec) if not d.written]


def written(spec: Mapping[str, Any]) -> list[Declared]:
    """The URIs the spec says the job writes."""
    return [d for d in declared(spec) if d.written]


def lineage_edges(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source, target) from every URI read to every URI written; none for a dry run (it
    changes nothing) or a spec whose declaration is malformed (refused before it could run)."""
    if spec.get("dry_run") is True:
        return []
    try:
        items = declared(spec)
    except DeclarationError:
        return []
    sources = [d.uri for d in items if not d.written]
    targets = [d.uri for d in items if d.written]
    return list(dict.fromkeys((s, t) for s in sources for t in targets if s != t))
