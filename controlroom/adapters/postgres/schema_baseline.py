"""Recognising a database whose tables schema.sql made, before there were migrations.

Releases before migrations ran one idempotent schema.sql at every start (recorded by its
digest in `controlroom_schema`, a table left in place: a process of such a release started
during a rolling deploy finds its digest there and changes nothing). Migration 0001 makes
what the last schema.sql made. On a database that has them, its tables are compared in the
catalog with what 0001 makes — built as temporary tables in a savepoint rolled back at once —
column by column (type, NOT NULL, default), constraint by constraint and index by index.

Not compared: storage parameters (the event store library made some read models' position
tables with autovacuum settings of its own), owners, grants, and anything a table has beyond
what 0001 makes (an operator's own index, say).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

Shape = dict[str, dict[str, tuple[Any, ...]]]
"""Per table: "column x" / "constraint x" / "index x" → what defines it."""

_COLUMNS = """
SELECT c.relname, 'column ' || a.attname,
       format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relnamespace = %(schema)s::oid AND c.relname = ANY(%(tables)s) AND c.relkind IN ('r', 'p')
"""
_CONSTRAINTS = """
SELECT c.relname, 'constraint ' || k.conname, k.contype::text, pg_get_constraintdef(k.oid)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE c.relnamespace = %(schema)s::oid AND c.relname = ANY(%(tables)s)
"""
_INDEXES = """
SELECT c.relname, 'index ' || i.relname, pg_get_indexdef(x.indexrelid)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
WHERE c.relnamespace = %(schema)s::oid AND c.relname = ANY(%(tables)s)
"""
_TABLES = "SELECT relname FROM pg_class WHERE relnamespace = %s::oid AND relkind IN ('r', 'p')"
_QUALIFIED_TABLE = re.compile(r' ON (ONLY )?(?:"[^"]+"|[^ ."]+)\.')


def differences_from(conn: psycopg.Connection[Any], sql: str) -> list[str] | None:
    """How the database's tables differ from those `sql` makes: None when it has none of them
    (nothing to recognise), [] when it has them all as `sql` makes them.

    Run in a transaction (the caller's, under the schema lock); leaves nothing behind.
    """
    expected = _built(conn, sql)
    row = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = current_schema()").fetchone()
    assert row is not None
    present = _shape(conn, row[0], sorted(expected))
    if not present:
        return None
    problems = []
    for table, parts in sorted(expected.items()):
        if table not in present:
            problems.append(f"table {table} missing")
            continue
        for part, definition in sorted(parts.items()):
            found = present[table].get(part)
            if found is None:
                problems.append(f"{table}: {part} missing")
            elif found != definition:
                problems.append(f"{table}: {part} is {_describe(found)}, not {_describe(definition)}")
    return problems


def _built(conn: psycopg.Connection[Any], sql: str) -> Shape:
    """What `sql` makes, built in this session's temporary schema and rolled back."""
    with conn.transaction(force_rollback=True):
        # Unqualified names are created in the first schema of the path: the temporary one.
        conn.execute("SET LOCAL search_path = pg_temp")
        conn.execute("CREATE TEMPORARY TABLE controlroom_baseline_probe ()")  # makes pg_temp_N
        row = conn.execute("SELECT pg_my_temp_schema()::oid").fetchone()
        assert row is not None
        temp = row[0]
        before = {r[0] for r in conn.execute(_TABLES, (temp,)).fetchall()}
        conn.execute(sql)  # a migration file of ours
        made = sorted({r[0] for r in conn.execute(_TABLES, (temp,)).fetchall()} - before)
        return _shape(conn, temp, made)


def _shape(conn: psycopg.Connection[Any], schema: int, tables: list[str]) -> Shape:
    shape: Shape = {}
    params = {"schema": schema, "tables": tables}
    for query in (_COLUMNS, _CONSTRAINTS):
        for table, part, *definition in conn.execute(query, params).fetchall():
            shape.setdefault(table, {})[part] = tuple(definition)
    for table, part, definition in conn.execute(_INDEXES, params).fetchall():
        # The definition names the table with its schema: the temporary one, or the database's.
        shape.setdefault(table, {})[part] = (_QUALIFIED_TABLE.sub(r" ON \1", definition, count=1),)
    return shape


def _describe(definition: tuple[Any, ...]) -> str:
    if len(definition) == 3:  # a column: type, NOT NULL, default
        kind, not_null, default = definition
        return " ".join([kind, *(["NOT NULL"] if not_null else []),
                         *([f"DEFAULT {default}"] if default is not None else [])])
    return str(definition[-1])
