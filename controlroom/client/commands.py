"""`controlroom submit` and `controlroom runs watch`: the argument parsing and the entry points."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from controlroom.client.http import DEFAULT_URL
from controlroom.client.watch import EXIT_ERROR, submit, watch

EPILOG = ("exit status: 0 completed, 1 failed, 2 cancelled, 3 --timeout reached, "
          "4 could not submit or watch (bad input, refused, unreachable)")


def _connection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("CONTROLROOM_URL") or DEFAULT_URL,
                   help=f"the API (env CONTROLROOM_URL; default {DEFAULT_URL})")
    p.add_argument("--token", default=os.environ.get("CONTROLROOM_TOKEN"),
                   help="bearer token (env CONTROLROOM_TOKEN)")
    p.add_argument("--timeout", type=float, metavar="S", help="give up waiting after S seconds")
    p.add_argument("--json", action="store_true", dest="as_json",
                   help="one JSON event per line on stdout")


def add_commands(sub: Any) -> None:
    """Register `submit` and `runs watch` on the `controlroom` subcommands."""
    s = sub.add_parser("submit", help="submit a job (JOB.json, or - for stdin) over HTTP",
                       epilog=EPILOG)
    s.add_argument("job", metavar="JOB.json")
    s.add_argument("--wait", action="store_true", help="follow the run and exit with its outcome")
    s.add_argument("--idempotency-key", help="default: a fresh key (retries stay safe)")
    _connection_options(s)
    s.set_defaults(func=cmd_submit)
    runs = sub.add_parser("runs", help="follow runs over HTTP")
    actions = runs.add_subparsers(dest="action", required=True)
    w = actions.add_parser("watch", help="stream a run's progress and log until it ends",
                           epilog=EPILOG)
    w.add_argument("run_id", metavar="RUN_ID")
    w.add_argument("--after", type=int, default=0, metavar="ID",
                   help="start after this event id (resume where a previous watch stopped)")
    _connection_options(w)
    w.set_defaults(func=cmd_runs_watch)


def _token(args: argparse.Namespace) -> str | None:
    if not args.token:
        print("error: no token: pass --token or set CONTROLROOM_TOKEN "
              "(`controlroom token --tenant T --sub S` prints one)", file=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no request lines among the output
    return args.token or None


def cmd_submit(settings: Any, args: argparse.Namespace) -> int:
    """Submit JOB.json; with --wait, exit with the run's outcome."""
    token = _token(args)
    if token is None:
        return EXIT_ERROR
    try:
        body = sys.stdin.buffer.read() if args.job == "-" else Path(args.job).read_bytes()
    except OSError as e:
        print(f"error: cannot read {args.job}: {e.strerror}", file=sys.stderr)
        return EXIT_ERROR
    return asyncio.run(submit(args.url, token, body, wait=args.wait, as_json=args.as_json,
                              timeout=args.timeout, idempotency_key=args.idempotency_key))


def cmd_runs_watch(settings: Any, args: argparse.Namespace) -> int:
    """Watch a run until it ends; exit with its outcome."""
    token = _token(args)
    if token is None:
        return EXIT_ERROR
    return asyncio.run(watch(args.url, token, args.run_id, as_json=args.as_json,
                             timeout=args.timeout, after=args.after))
