"""Runner of kb_catalog: tables, columns, types, row counts and comments, read-only.

Environment: `CONTROLROOM_INPUTS` (JSON list of `{connection, env, schema, table}`; `table`
null means every table of the schema), `CONTROLROOM_CATALOG_ENTITY`. Writes
`output/catalog.json` and `output/catalog.md`, then reports lineage table → catalog.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from controlroom.runners.common import (
    APPLICATION_NAME,
    CONNECT_TIMEOUT_S,
    JobError,
    dsn_from,
    env_json,
    lineage,
    progress,
    run,
)
from controlroom.runners.markdown import catalog_markdown

_BARE = re.compile(r"[^\W\d][\w$]*")
"""An identifier that reads back unchanged without quotes (when lower case)."""

INPUTS_ENV = "CONTROLROOM_INPUTS"
CATALOG_ENTITY_ENV = "CONTROLROOM_CATALOG_ENTITY"
OUTPUT_DIR = Path("output")
COUNT_TIMEOUT = "30s"
"""An exact count slower than this falls back to the planner's estimate."""
COUNTABLE = {"r", "p", "m"}
KINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view",
         "f": "foreign table"}

TABLES = """
SELECT c.oid, n.nspname, c.relname, c.relkind, obj_description(c.oid, 'pg_class'), c.reltuples
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND (%(table)s::text IS NULL OR c.relname = %(table)s)
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
ORDER BY c.relname
"""
COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), col_description(a.attrelid, a.attnum)
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def row_count(conn: psycopg.Connection, schema: str, name: str, estimate: float) -> tuple[int | None, bool]:
    """(rows, exact): an exact count unless it takes too long."""
    query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
    try:
        row = conn.execute(query).fetchone()
    except psycopg.errors.QueryCanceled:
        return (int(estimate) if estimate >= 0 else None), False
    return (int(row[0]) if row else None), True


def catalog_input(conn: psycopg.Connection, item: dict[str, Any]) -> list[dict[str, Any]]:
    """Catalog entries of one input (a schema, or one table of it)."""
    found = conn.execute(TABLES, {"schema": item["schema"], "table": item["table"]}).fetchall()
    if item["table"] is not None and not found:
        raise JobError(f"{item['uri']}: no table {item['schema']}.{item['table']}")
    entries = []
    for oid, schema, name, kind, comment, estimate in found:
        columns = [
            {"name": c[0], "type": c[1], "nullable": c[2], "default": c[3], "comment": c[4]}
            for c in conn.execute(COLUMNS, (oid,))
        ]
        rows, exact = row_count(conn, schema, name, estimate) if kind in COUNTABLE else (None, False)
        entries.append({
            "entity": f"{schema}.{name}", "connection": item["connection"], "schema": schema,
            "name": name, "kind": KINDS[kind], "comment": comment, "row_count": rows,
            "row_count_exact": exact, "columns": columns,
        })
    return entries


def build_catalog(inputs: list[dict[str, Any]], entity: str) -> dict[str, Any]:
    """The catalog document for `inputs`, each read over a read-only connection."""
    tables: list[dict[str, Any]] = []
    for i, item in enumerate(inputs, 1):
        options = f"-c default_transaction_read_only=on -c statement_timeout={COUNT_TIMEOUT}"
        try:
            with psycopg.connect(dsn_from(item), autocommit=True, prepare_threshold=None,
                                 connect_timeout=CONNECT_TIMEOUT_S, options=options,
                                 application_name=APPLICATION_NAME) as conn:
                entries = catalog_input(conn, item)
        except psycopg.OperationalError as e:
            raise JobError(f"could not read {item['connection']!r}: {e}") from None
        if not entries:
            print(f"warning: {item['uri']}: nothing to catalog (no tables in schema {item['schema']!r})")
        for entry in entries:
            print(f"catalogued {entry['entity']} ({entry['kind']}): {len(entry['columns'])} columns, "
                  f"{entry['row_count'] if entry['row_count'] is not None else '?'} rows")
        tables += entries
        progress(90 * i / len(inputs), f"catalogued {item['uri']}")
    unique = {(t["connection"], t["entity"]): t for t in tables}
    return {"catalog": entity, "generated_at": datetime.now(UTC).isoformat(),
            "tables": list(unique.values())}


def write(catalog: dict[str, Any], out: Path = OUTPUT_DIR) -> list[Path]:
    """Write catalog.json and catalog.md into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    as_json, as_md = out / "catalog.json", out / "catalog.md"
    as_json.write_text(json.dumps(catalog, indent=2, ensure_ascii=False) + "\n")
    as_md.write_text(catalog_markdown(catalog))
    return [as_json, as_md]


def _quoted(name: str) -> str:
    """An identifier as a URI writes it (as validation.uris.quote_identifier does)."""
    if _BARE.fullmatch(name) and name == name.lower():
        return name
    return '"' + name.replace('"', '""') + '"'


def table_uri(table: dict[str, Any]) -> str:
    """`connection://schema.table`: lineage keeps the connection as the table's namespace."""
    return f"{table['connection']}://{_quoted(table['schema'])}.{_quoted(table['name'])}"


def main() -> int:
    """Catalog the inputs, write both files, then report lineage."""
    entity = os.environ.get(CATALOG_ENTITY_ENV) or "catalog://kb_catalog"
    catalog = build_catalog(env_json(INPUTS_ENV), entity)
    for path in write(catalog):
        print(f"wrote {path.as_posix()} ({len(catalog['tables'])} tables)")
    for table in catalog["tables"]:
        if any(ch.isspace() for ch in table["entity"]):
            print(f"warning: no lineage for {table['entity']!r}: entities can't contain whitespace")
            continue
        lineage(table_uri(table), entity)
    progress(100, f"catalogued {len(catalog['tables'])} tables")
    return 0


if __name__ == "__main__":
    run(main)
