"""Operator commands: background processes, tenant connections, tokens."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import controlroom
from controlroom.cli.budget import name_connections
from controlroom.cli.hosts import pipeline, read_models
from controlroom.cli.wiring import Services, bootstrap, keys
from controlroom.settings import Settings

SETTLE_TIMEOUT_S = 5.0
"""How long `connections` waits for the read model to show a change."""


@contextlib.contextmanager
def _beside_read_model(settings: Settings, projection: str) -> Iterator[Services]:
    """The services, with `projection` hosted here unless a running service hosts it already.

    So a change made from the command line shows in listings even with nothing else running.
    """
    with bootstrap(settings, run_worker=False, run_projections=False, api=False) as services:
        host = pipeline(services, [read_models(services)[projection]]).start()
        try:
            yield services
        finally:
            host.stop()


def cmd_connections(settings: Settings, args: argparse.Namespace) -> int:
    """Set, list or delete a tenant's connections, straight against the database."""
    from controlroom.commands.errors import ConnectionNotFoundError
    from controlroom.domain.connections import InvalidConnectionError

    with _beside_read_model(settings, "connections") as services:
        try:
            if args.action == "set":
                dsn = sys.stdin.readline().strip() if args.dsn == "-" else args.dsn
                saved = services.connections.set(args.tenant, args.name, dsn, args.by)
                print(f"{'created' if saved.created else 'updated'} {saved.name}: {saved.display_dsn}")
            elif args.action == "delete":
                services.connections.delete(args.tenant, args.name, args.by)
                print(f"deleted {args.name}")
            if not services.connection_store.wait_caught_up(SETTLE_TIMEOUT_S):
                print("warning: the connections read model is behind; listings may lag",
                      file=sys.stderr)
            if args.action == "list":
                for name, display, *_ in services.connection_store.listing(args.tenant):
                    print(f"{name}\t{display}")
        except (InvalidConnectionError, ConnectionNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


def cmd_api_keys(settings: Settings, args: argparse.Namespace) -> int:
    """Create, list or revoke a tenant's API keys, straight against the database."""
    from uuid import UUID

    from controlroom.commands.errors import ApiKeyNotFoundError
    from controlroom.domain.api_keys import InvalidApiKeyError

    with _beside_read_model(settings, "api_keys") as services:
        try:
            if args.action == "create":
                scopes = args.scope.split() if args.scope is not None else None
                issued = services.api_keys.issue(args.tenant, args.name, scopes,
                                                 args.expires_in_days, args.by)
                print(f"created API key {issued.id} ({issued.name}); it is shown only now:",
                      file=sys.stderr)
                print(issued.key)
            elif args.action == "revoke":
                try:
                    key_id = UUID(args.id)
                except ValueError:
                    raise ApiKeyNotFoundError(args.id) from None
                services.api_keys.revoke(args.tenant, key_id, args.by)
                print(f"revoked {key_id}")
            if not services.api_key_store.wait_caught_up(SETTLE_TIMEOUT_S):
                print("warning: the api_keys read model is behind; listings may lag", file=sys.stderr)
            if args.action == "list":
                for key_id, name, scopes, last4, by, created, expires in \
                        services.api_key_store.listing(args.tenant):
                    until = expires.isoformat() if expires else "never"
                    print(f"{key_id}\t{name}\t…{last4}\t{' '.join(scopes)}\t{by}\t"
                          f"{created.isoformat()}\texpires {until}")
        except (InvalidApiKeyError, ApiKeyNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


def cmd_background(settings: Settings, args: argparse.Namespace) -> int:
    """Run only the worker, or only the projections, until interrupted."""
    worker = args.command == "worker"
    if worker and settings.worker_processes > 1:
        return _worker_processes(settings, args)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    name_connections(args.command)
    with bootstrap(settings, run_worker=worker, run_projections=not worker, api=False) as services:
        print(f"Control Room {args.command} running (data: {settings.data_dir}); "
              f"{services.budget.describe() if services.budget else ''}", file=sys.stderr)
        done.wait()
    return 0


def _worker_processes(settings: Settings, args: argparse.Namespace) -> int:
    """`worker --processes N`: N single-process workers, each restarted if it dies."""
    from controlroom.adapters.execution.dramatiq_queue import supervise

    if not settings.redis_url:
        print("--processes needs REDIS_URL (without it, runs queue inside one process)",
              file=sys.stderr)
        return 2
    env = {**os.environ, "CONTROLROOM_DATA_DIR": str(settings.data_dir),
           "CONTROLROOM_WORKER_PROCESSES": "1"}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    # The children run the code the supervisor runs, wherever they are started from: `-P`
    # keeps the working directory (a checkout, say) off their import path.
    package_root = str(Path(controlroom.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-P", "-m", "controlroom.cli", *(["-v"] if args.verbose else []),
            "worker", "--threads", str(settings.worker_slots)]
    return supervise(argv, env, settings.worker_processes)


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    """Print a signed token."""
    from controlroom.api.auth import issue_token

    if not 0 < args.ttl <= settings.jwt_max_lifetime_s:  # the server would refuse it
        print(f"--ttl must be 1 to {settings.jwt_max_lifetime_s} seconds "
              "(CONTROLROOM_JWT_MAX_LIFETIME_S)", file=sys.stderr)
        return 2
    secret, _ = keys(settings)
    print(issue_token(secret, tenant=args.tenant, sub=args.sub, scopes=args.scope.split(),
                      ttl_s=args.ttl, audience=settings.jwt_audience, issuer=settings.jwt_issuer))
    return 0

