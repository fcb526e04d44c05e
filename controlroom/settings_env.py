"""How a settings struct is read from environment variables: each field names its own.

A field is declared once, as `Annotated[type, Env("CONTROLROOM_X", "what it means")] = default`;
reading the environment, the configuration table in docs/operations.md and its check all come
from that declaration.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

TRUE = ("1", "true", "yes")
"""What turns a boolean setting on; anything else leaves it off."""


@dataclass(frozen=True)
class Env:
    """A setting's environment variable and its one-line meaning, as operators read it."""

    name: str
    doc: str
    unset: str | None = None
    """What happens when the variable is unset, where the default value alone doesn't say
    (it is None, or computed when the service starts)."""
    fallback: Callable[[], Any] | None = None
    """For a field the struct requires: its value when the variable is unset."""


@dataclass(frozen=True)
class Declared:
    """One environment-backed field of a settings struct (nested structs flattened)."""

    path: tuple[str, ...]
    """Attribute names from the root struct: ("webhooks", "timeout_s")."""
    env: Env
    type: Any
    default: Any
    """The struct's default; msgspec.NODEFAULT for a required field."""


def declared(struct: type[msgspec.Struct], path: tuple[str, ...] = ()) -> Iterator[Declared]:
    """Every environment-backed field of `struct`, in declaration order, nested structs inline."""
    for f in msgspec.structs.fields(struct):
        kind, env = _unannotated(f.type)
        if env is None:
            if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
                yield from declared(kind, (*path, f.name))
            continue
        default = f.default_factory() if f.default_factory is not msgspec.NODEFAULT else f.default
        yield Declared((*path, f.name), env, kind, default)


def read(struct: type[msgspec.Struct], env: dict[str, str]) -> Any:
    """An instance of `struct` from `env`: an unset or empty variable leaves the field's default."""
    values: dict[str, Any] = {}
    for f in msgspec.structs.fields(struct):
        kind, meta = _unannotated(f.type)
        if meta is None:
            if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
                values[f.name] = read(kind, env)
            continue
        raw = env.get(meta.name) or ""
        if raw:
            values[f.name] = parse(meta.name, kind, raw)
        elif meta.fallback is not None:
            values[f.name] = meta.fallback()
    return struct(**values)


def parse(name: str, kind: Any, raw: str) -> Any:
    """`raw`, the value of variable `name`, as a `kind`; a ValueError names the variable."""
    optional = _without_none(kind)
    if optional is not None:
        return parse(name, optional, raw)
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return value
    if kind is bool:
        return raw.lower() in TRUE
    if get_origin(kind) is tuple:
        return tuple(p for p in raw.split(os.pathsep) if p)
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, "
                             f"not {raw!r}") from None
    if kind in (str, Path):
        return kind(raw)
    raise TypeError(f"{name}: no way to read a {kind!r} from the environment")


def _unannotated(kind: Any) -> tuple[Any, Env | None]:
    if get_origin(kind) is not Annotated:
        return kind, None
    base, *extras = get_args(kind)
    return base, next((e for e in extras if isinstance(e, Env)), None)


def _without_none(kind: Any) -> Any:
    """`X` for `X | None`, else None."""
    if get_origin(kind) not in (Union, types.UnionType):
        return None
    rest = [a for a in get_args(kind) if a is not type(None)]
    return rest[0] if len(rest) == 1 else None
