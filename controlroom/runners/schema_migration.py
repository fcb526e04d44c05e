"""Runner of schema_migration: every file, statement by statement, in ONE transaction.

Environment: `CONTROLROOM_SQL_FILES` (JSON list of paths, in the order to apply),
`CONTROLROOM_TARGET` (JSON `{"connection", "env"}`; the DSN is in `$env`),
`CONTROLROOM_DRY_RUN` (`true`: apply everything, then roll back).
An SQL error prints `path:line:column: message` to stderr, rolls back and exits 1.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
from pglast import ast, parse_sql
from pglast.enums import TransactionStmtKind
from pglast.parser import ParseError

from controlroom.runners.common import (
    APPLICATION_NAME,
    CONNECT_TIMEOUT_S,
    JobError,
    dsn_from,
    env_json,
    is_dry_run,
    progress,
    run,
)

FILES_ENV = "CONTROLROOM_SQL_FILES"
TARGET_ENV = "CONTROLROOM_TARGET"
ALLOWED_TRANSACTION_STMTS = {
    TransactionStmtKind.TRANS_STMT_SAVEPOINT, TransactionStmtKind.TRANS_STMT_RELEASE,
    TransactionStmtKind.TRANS_STMT_ROLLBACK_TO,
}
"""Savepoints nest inside our transaction; BEGIN/COMMIT/ROLLBACK would break out of it."""


class SqlFailure(Exception):
    """A statement failed at `line`:`column` of its file."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


def statements(sql: str) -> Iterator[tuple[int, str]]:
    """(first line, text) of each statement; the whole file when pglast can't split it."""
    try:
        parsed = parse_sql(sql)
    except ParseError:
        yield 1, sql  # the server will report the error and where it is
        return
    for raw in parsed:
        start = raw.stmt_location or 0
        if isinstance(raw.stmt, ast.TransactionStmt) and raw.stmt.kind not in ALLOWED_TRANSACTION_STMTS:
            line = sql.count("\n", 0, start) + 1
            raise SqlFailure(line, 1, "transaction control is not allowed: every file runs in "
                                      "one transaction that Control Room commits or rolls back")
        end = start + raw.stmt_len if raw.stmt_len else len(sql)
        yield sql.count("\n", 0, start) + 1, sql[start:end]


def apply_file(conn: psycopg.Connection, sql: str) -> int:
    """Execute every statement of one file; the number executed."""
    count = 0
    for first_line, text in statements(sql):
        try:
            conn.execute(text)  # no params: sent as written
        except psycopg.Error as e:
            position = e.diag.statement_position
            offset = int(position) - 1 if position else 0
            line = first_line + text.count("\n", 0, offset)
            column = offset - text.rfind("\n", 0, offset)
            message = e.diag.message_primary or str(e)
            for extra in (e.diag.message_detail, e.diag.message_hint):
                if extra:
                    message += f"\n  {extra}"
            raise SqlFailure(line, column, message) from None
        count += 1
    return count


def main() -> int:
    """Apply the migration; 0 once committed (or rolled back as a dry run)."""
    files: list[str] = env_json(FILES_ENV)
    target = env_json(TARGET_ENV)
    dry = is_dry_run()
    print(f"migrating connection {target['connection']!r}: {len(files)} file(s)"
          + (" (dry run)" if dry else ""), flush=True)
    try:
        conn = psycopg.connect(dsn_from(target), autocommit=False, prepare_threshold=None,
                               connect_timeout=CONNECT_TIMEOUT_S,
                               application_name=APPLICATION_NAME)
    except psycopg.OperationalError as e:
        raise JobError(f"could not connect to {target['connection']!r}: {e}") from None
    with conn:
        for i, path in enumerate(files, 1):
            try:
                count = apply_file(conn, Path(path).read_text())
            except SqlFailure as e:
                conn.rollback()
                print(f"{path}:{e.line}:{e.column}: ERROR: {e.message}", file=sys.stderr)
                print("rolled back: no file of this migration was applied", file=sys.stderr)
                return 1
            progress(100 * i / len(files), f"applied {path} ({count} statements)")
        if dry:
            conn.rollback()
            print("dry run: every file applied, then rolled back; nothing was changed")
        else:
            conn.commit()
            print(f"committed {len(files)} file(s)")
    return 0


if __name__ == "__main__":
    run(main)
