"""The `controlroom` command: its arguments, and which module carries out each."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import msgspec

from controlroom.adapters.postgres.migrations import MigrationError
from controlroom.cli import db, log_setup, projections
from controlroom.cli.admin import cmd_api_keys, cmd_background, cmd_connections, cmd_token
from controlroom.cli.sandboxing import SandboxUnavailableError, not_dumpable
from controlroom.cli.serving import cmd_serve
from controlroom.settings import from_env

TOKEN_TTL_S = 3600
"""`controlroom token --ttl` unless given: an hour."""


def parser() -> argparse.ArgumentParser:
    """The `controlroom` argument parser."""
    from controlroom.api.auth import DEFAULT_SCOPES
    from controlroom.client.commands import add_commands as add_client_commands

    defaults = from_env({})  # the declared defaults, for the help texts
    p = argparse.ArgumentParser(
        prog="controlroom", description="Control Room: submit jobs, watch runs, keep their lineage."
    )
    p.add_argument("--data-dir", help="data directory (env CONTROLROOM_DATA_DIR)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API, projections and an in-process worker")
    serve.add_argument("--host", help=f"interface to bind (default {defaults.host})")
    serve.add_argument("--port", type=int, help=f"port (default {defaults.port})")
    serve.add_argument("--workers", type=int, dest="worker_slots",
                       help=f"jobs run at once by the in-process worker (default {defaults.worker_slots})")
    serve.add_argument("--no-worker", action="store_true", help="don't execute jobs here")
    serve.add_argument("--no-projections", action="store_true",
                       help="leave the read models to `controlroom projector` processes")
    serve.add_argument("--database-url", help="external Postgres (env DATABASE_URL)")
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="execute queued runs (no API)")
    worker.add_argument("--threads", "--workers", type=int, dest="worker_slots",
                        help=f"jobs each worker process runs at once (default {defaults.worker_slots})")
    worker.add_argument("--processes", type=int, dest="worker_processes",
                        help=f"worker processes (default {defaults.worker_processes}; "
                             "more than one needs REDIS_URL)")
    worker.add_argument("--database-url", help="external Postgres (env DATABASE_URL)")
    worker.set_defaults(func=cmd_background)
    projector = sub.add_parser("projector", help="keep the read models up to date (no API)")
    projector.add_argument("--database-url", help="external Postgres (env DATABASE_URL)")
    projector.set_defaults(func=cmd_background)
    conns = sub.add_parser("connections", help="manage a tenant's named database connections")
    conns.add_argument("--database-url", help="external Postgres (env DATABASE_URL)")
    actions = conns.add_subparsers(dest="action", required=True)
    for action, help_text in (("set", "create or replace a connection"),
                              ("list", "list connections (passwords masked)"),
                              ("delete", "remove a connection")):
        a = actions.add_parser(action, help=help_text)
        a.add_argument("--tenant", required=True)
        a.add_argument("--by", default=os.environ.get("USER") or "cli", help="recorded as updated_by")
        if action != "list":
            a.add_argument("name")
        if action == "set":
            a.add_argument("dsn", help="postgresql://user:password@host:port/db, or - to read stdin")
    conns.set_defaults(func=cmd_connections)
    _add_api_keys(sub, DEFAULT_SCOPES)
    token = sub.add_parser("token", help="print a bearer token for the API")
    token.add_argument("--tenant", required=True)
    token.add_argument("--sub", required=True, help="who the token is for")
    token.add_argument("--scope", default=DEFAULT_SCOPES, help=f"default: {DEFAULT_SCOPES!r}")
    token.add_argument("--ttl", type=int, default=TOKEN_TTL_S, help="seconds")
    token.set_defaults(func=cmd_token)
    projections.add_command(sub)
    db.add_command(sub)
    add_client_commands(sub)  # submit, runs watch: HTTP only (controlroom/client/)
    return p


def _add_api_keys(sub: Any, default_scopes: str) -> None:
    keys = sub.add_parser("api-keys", help="manage a tenant's API keys (for headless clients)")
    keys.add_argument("--database-url", help="external Postgres (env DATABASE_URL)")
    actions = keys.add_subparsers(dest="action", required=True)
    for action, help_text in (("create", "issue a key and print it (shown only once)"),
                              ("list", "list live keys (never the key itself)"),
                              ("revoke", "revoke a key")):
        a = actions.add_parser(action, help=help_text)
        a.add_argument("--tenant", required=True)
        a.add_argument("--by", default=os.environ.get("USER") or "cli", help="recorded as created_by")
        if action == "create":
            a.add_argument("--name", required=True)
            a.add_argument("--scope", help=f"space-separated (default {default_scopes!r})")
            a.add_argument("--expires-in-days", type=int, help="default: never")
        if action == "revoke":
            a.add_argument("id", help="the key's id (from `list`)")
    keys.set_defaults(func=cmd_api_keys)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `controlroom` command."""
    not_dumpable()  # it holds secrets: keep its memory and environ from even its own uid
    args = parser().parse_args(argv)
    log_setup.configure(verbose=args.verbose)
    settings = from_env()
    overrides = {k: getattr(args, k, None)
                 for k in ("host", "port", "worker_slots", "worker_processes")}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    settings = msgspec.structs.replace(
        settings, **{k: v for k, v in overrides.items() if v is not None}
    )
    settings.data_dir = Path(settings.data_dir)
    try:
        return int(args.func(settings, args))
    except SandboxUnavailableError as e:
        logging.getLogger("controlroom").error("%s", e)
        return 2
    except MigrationError as e:  # at start: the schema can't be brought up to date
        logging.getLogger("controlroom").error("%s", e)
        return 1

