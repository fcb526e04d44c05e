"""The configuration table of docs/operations.md, rendered from the settings' declarations.

`python -m controlroom.settings_table docs/operations.md` rewrites the table between its
markers; a test fails while the page and the declarations disagree.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from controlroom.settings import GiB, MiB, Settings
from controlroom.settings_env import Declared, declared

BEGIN = "<!-- settings: rendered by `python -m controlroom.settings_table docs/operations.md` -->"
END = "<!-- settings: end -->"
HEADER = "| variable | meaning | when unset |\n|---|---|---|"
_NAME = re.compile(r"^\| `([A-Z0-9_]+)`")


def shown(setting: Declared) -> str:
    """What the table says an unset variable means."""
    if setting.env.unset is not None:
        return setting.env.unset
    value = setting.default
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return f"`{value}`" if value else "none"
    if isinstance(value, tuple):
        return ", ".join(f"`{v}`" for v in value) or "none"
    if isinstance(value, int) and setting.path[-1].endswith("_bytes"):
        return _size(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    raise ValueError(f"{setting.env.name}: its declaration must say what unset means (Env.unset)")


def rows() -> dict[str, str]:
    """Each variable's table row, in declaration order."""
    flags = _flags()
    out = {}
    for s in declared(Settings):
        name = f"`{s.env.name}`"
        if len(s.path) == 1 and s.path[0] in flags:
            name += " / " + ", ".join(f"`{f}`" for f in flags[s.path[0]])
        out[s.env.name] = f"| {name} | {_cell(s.env.doc)} | {_cell(shown(s))} |"
    return out


def table() -> str:
    """The whole table, between its markers (blank lines keep them out of the table)."""
    return "\n".join([BEGIN, "", HEADER, *rows().values(), "", END])


def documented(page: str) -> dict[str, str]:
    """The rows the page's table holds now, by variable."""
    start, end = _block(page)
    found = {}
    for line in page[start:end].splitlines():
        if m := _NAME.match(line):
            found[m.group(1)] = line
    return found


def rewrite(page: str) -> str:
    """The page with its table rendered afresh."""
    start, end = _block(page)
    return page[:start] + table() + page[end + len(END):]


def _block(page: str) -> tuple[int, int]:
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no settings table between {BEGIN!r} and {END!r}")
    return start, end


def _flags() -> dict[str, list[str]]:
    """Command-line flags overriding a setting, by the setting's name (their `dest`)."""
    from controlroom.cli.entry import parser

    flags: dict[str, list[str]] = {}
    pending = [parser()]
    while pending:
        p = pending.pop(0)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif action.dest in Settings.__struct_fields__:
                known = flags.setdefault(action.dest, [])
                known.extend(f for f in action.option_strings if f not in known)
    return {dest: sorted(names) for dest, names in flags.items()}


def _size(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def main(argv: list[str]) -> int:
    """Rewrite the table in each page named."""
    for name in argv:
        path = Path(name)
        path.write_text(rewrite(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
