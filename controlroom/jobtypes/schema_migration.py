"""schema_migration: the submission's `.sql` files, in path order, in one transaction.

The target is the connection named by `spec.target`, else the connection of the first
`spec.outputs` URI. Lineage (recorded only when the migration committed): an edge from
`migration://<job_name>` to every table it creates or alters, found with pglast.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

from pglast import ast, parse_sql
from pglast.enums import ObjectType, VariableSetKind
from pglast.parser import ParseError

from controlroom.commands.ports import PYTHON, Connections, JobContext, Launch, PlanError
from controlroom.jobtypes.tables import (
    DRY_RUN_ENV,
    dry_run,
    entity_uri,
    parse_spec_uris,
    resolve,
)
from controlroom.validation import FilesNeeded, JobRules
from controlroom.validation.uris import TableUri, UriError, connection_env, parse_uri

RUNNER = "controlroom.runners.schema_migration"
FILES_ENV = "CONTROLROOM_SQL_FILES"
TARGET_ENV = "CONTROLROOM_TARGET"
SOURCE_SCHEME = "migration"
DEFAULT_SCHEMA = "public"
"""Where unqualified names land under PostgreSQL's default search_path."""
TABLE_LIKE = {ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW,
              ObjectType.OBJECT_FOREIGN_TABLE}
TEMPORARY = "t"


@dataclass(frozen=True)
class SchemaMigration:
    """Plans a schema_migration attempt."""

    connections: Connections
    name: str = "schema_migration"
    rules: ClassVar[JobRules] = JobRules(
        files=(FilesNeeded((".sql",), "a .sql migration"),), outputs_need_table=False,
        needs_target=True,
    )

    def plan(self, ctx: JobContext) -> Launch:
        """Run the migration runner against the target connection."""
        files = sorted(p for p in ctx.files if p.endswith(".sql"))
        if not files:
            raise PlanError("no_migrations", "no .sql files among the code files")
        target = _target(ctx)
        resolved = resolve(self.connections, ctx.tenant_id, [target])
        edges = [] if dry_run(ctx.spec) else [
            (entity_uri(SOURCE_SCHEME, ctx.job_name), in_connection(target, *table))
            for table in changed_relations(ctx.files[p] for p in files)
        ]
        env = {
            **resolved.env,
            FILES_ENV: json.dumps(files),
            TARGET_ENV: json.dumps({"connection": target, "env": connection_env(target)}),
            DRY_RUN_ENV: "true" if dry_run(ctx.spec) else "false",
        }
        return Launch(argv=[PYTHON, "-I", "-u", "-m", RUNNER], env=env, redact=resolved.redact,
                      lineage_on_success=edges)


def _target(ctx: JobContext) -> str:
    target = ctx.spec.get("target")
    if isinstance(target, str) and target:
        return target
    outputs = parse_spec_uris(ctx.spec, "outputs", table_required=False)
    if outputs and outputs[0].connection:
        return outputs[0].connection
    raise PlanError("no_target", "name the database to migrate: spec.target = a connection name "
                                 "(or a first spec.outputs URI such as warehouse://public)")


def in_connection(connection: str, schema: str, name: str) -> str:
    """A changed table as a URI through `connection`: lineage keeps the connection as namespace."""
    uri = TableUri(connection, schema, name).uri
    try:
        parse_uri(uri)
    except UriError:  # a target that is no connection name: the table alone
        return TableUri(None, schema, name).uri
    return uri


def changed_relations(sources: Iterable[str]) -> list[tuple[str, str]]:
    """(schema, name) of every persistent table or view the SQL creates or alters, in order.

    Follows `SET search_path` across the files (they run in one session); SQL pglast can't
    parse contributes nothing here — the database reports it when the migration runs.
    """
    schema = DEFAULT_SCHEMA
    found: dict[tuple[str, str], None] = {}
    for sql in sources:
        try:
            statements = parse_sql(sql)
        except ParseError:
            continue
        for raw in statements:
            stmt = raw.stmt
            if isinstance(stmt, ast.VariableSetStmt) and stmt.name == "search_path":
                schema = _first_schema(stmt) or DEFAULT_SCHEMA
            for rel in _targets(stmt):
                if rel.relpersistence != TEMPORARY and rel.relname is not None:
                    found[(rel.schemaname or schema, rel.relname)] = None
    return list(found)


def _first_schema(stmt: ast.VariableSetStmt) -> str | None:
    if stmt.kind != VariableSetKind.VAR_SET_VALUE:
        return None
    for arg in stmt.args or ():
        value = getattr(getattr(arg, "val", None), "sval", None)
        if value and value != "$user":
            return str(value)
    return None


def _targets(stmt: ast.Node | None) -> Iterator[ast.RangeVar]:
    match stmt:
        case ast.CreateStmt(relation=rel) if rel is not None:
            yield rel
        case ast.CreateTableAsStmt(into=into) if into is not None and into.rel is not None:
            yield into.rel
        case ast.ViewStmt(view=rel) if rel is not None:
            yield rel
        case ast.AlterTableStmt(relation=rel, objtype=kind) if kind in TABLE_LIKE and rel is not None:
            yield rel
        case ast.RenameStmt(relation=rel, renameType=kind, newname=new) if rel is not None:
            if kind in TABLE_LIKE:
                yield ast.RangeVar(schemaname=rel.schemaname, relname=new,
                                   relpersistence=rel.relpersistence)
            elif stmt.relationType in TABLE_LIKE:
                yield rel
