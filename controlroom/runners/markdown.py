"""The Markdown rendering of a kb_catalog document."""

from __future__ import annotations

from typing import Any

COLUMN_HEADER = "| column | type | nullable | default | comment |\n|---|---|---|---|---|\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _rows(table: dict[str, Any]) -> str:
    count = table["row_count"]
    if count is None:
        return "rows not counted"
    return f"{count} rows" if table["row_count_exact"] else f"about {count} rows (estimate)"


def catalog_markdown(catalog: dict[str, Any]) -> str:
    """A readable page: one section per table, its comment and a table of its columns."""
    tables = catalog["tables"]
    lines = [f"# Catalog `{catalog['catalog']}`", "",
             f"Generated {catalog['generated_at']}: {len(tables)} tables.", ""]
    for t in tables:
        lines += [f"## `{t['entity']}` ({t['connection']})", "",
                  f"{t['kind'].capitalize()}, {_rows(t)}.", ""]
        if t["comment"]:
            lines += [t["comment"], ""]
        body = "".join(
            "| " + " | ".join(_cell(c[k]) for k in ("name", "type", "nullable", "default", "comment"))
            + " |\n" for c in t["columns"]
        )
        lines += [COLUMN_HEADER + body]
    return "\n".join(lines)
