"""`controlroom projections`: where each read model stands, and rebuilding them from the log."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import psycopg

from controlroom.cli.hosts import NOT_REBUILDABLE, pipeline, read_models
from controlroom.cli.wiring import bootstrap
from controlroom.settings import Settings

POLL_S = 0.5
QUIET_REPORT_S = 5.0
"""Without a terminal, a progress line this often (CI logs stay readable)."""
PICKUP_WARNING_S = 15.0
"""A request nobody has started after this long: say which process is expected to."""


def add_command(sub: Any) -> None:
    """Register `projections status|rebuild`."""
    proj = sub.add_parser("projections", help="show or rebuild the read models")
    proj.add_argument("--database-url", help="external Postgres (env DATABASE_URL)")
    actions = proj.add_subparsers(dest="action", required=True)
    actions.add_parser("status", help="each projection's position, lag and host")
    rebuild = actions.add_parser(
        "rebuild", help="empty read models and replay the log into them, with progress")
    rebuild.add_argument("names", nargs="*", help="projections to rebuild (see `status`)")
    rebuild.add_argument("--all", action="store_true", help="every rebuildable projection")
    rebuild.add_argument("--timeout", type=float, default=None,
                         help="give up waiting after this many seconds (the rebuild goes on); exit 3")
    proj.set_defaults(func=cmd_projections)


def cmd_projections(settings: Settings, args: argparse.Namespace) -> int:
    """Show the projections, or rebuild some."""
    with bootstrap(settings, run_worker=False, run_projections=False, api=False) as services:
        models = read_models(services)
        with psycopg.connect(services.dsn, autocommit=True) as conn:
            if args.action == "status":
                _status(conn, {n: m.rebuild for n, m in models.items()})
                return 0
            names = list(models) if args.all else args.names
            problem = _refusal(names, models)
            if problem:
                print(f"error: {problem}", file=sys.stderr)
                return 2
            by = os.environ.get("USER") or "cli"
            # read_models() are the rebuildable ones: each has its Rebuild
            rebuilds = [rebuild for name in names if (rebuild := models[name].rebuild) is not None]
            for rebuild in rebuilds:
                rebuild.request(conn, by)
            # Carried out here, unless a running service or projector hosts it: then there. Here,
            # one reader decodes each event once and feeds every read model being rebuilt.
            services.running.start(pipeline(services, [models[name] for name in names]))
            try:
                return _follow(conn, rebuilds, args.timeout)
            finally:
                services.running.stop()


def _status(conn: psycopg.Connection[Any], rebuilds: dict[str, Any]) -> None:
    from controlroom.projections.execution import DispatchProjection
    from controlroom.projections.rebuild import Rebuild, log_head
    from controlroom.projections.session import holder
    from controlroom.projections.webhooks.outbox import OutboxProjection

    others = {p.name: Rebuild(p.name, (), tuple(p.topics))
              for p in (OutboxProjection, DispatchProjection)}
    print(f"log head: position {log_head(conn)}")
    print(f"{'projection':<13} {'position':>10} {'behind':>8}  {'rebuildable':<11}  host")
    for name, r in {**rebuilds, **others}.items():
        # Behind counts only events it subscribes to: the others never move its position.
        at = r.position(conn)
        behind = max(0, log_head(conn, r.topics) - at)
        print(f"{name:<13} {at:>10} {behind:>8}  {'yes' if name in rebuilds else 'no':<11}  "
              f"{holder(conn, name) or '-'}")


def _refusal(names: list[str], hosts: dict[str, Any]) -> str | None:
    if not names:
        return f"name the projections to rebuild, or --all ({', '.join(hosts)})"
    for name in names:
        if name in NOT_REBUILDABLE:
            return f"{name} can't be rebuilt: {NOT_REBUILDABLE[name]}"
        if name not in hosts:
            return f"no projection {name!r}; rebuildable: {', '.join(hosts)}"
    return None


def _follow(conn: psycopg.Connection[Any], rebuilds: list[Any], timeout: float | None) -> int:
    """Show progress until every rebuild is done: 0, 1 if one failed, 3 on timeout."""
    from controlroom.projections.rebuild import DONE, FAILED

    shown = _Display(sys.stderr.isatty())
    began = time.monotonic()
    try:
        while True:
            states = [r.progress(conn) for r in rebuilds]
            shown.update(states)
            if all(p.state in (DONE, FAILED) for p in states):
                break
            waited = time.monotonic() - began
            if timeout is not None and waited > timeout:
                print(f"timed out after {timeout:g} s; the rebuild goes on "
                      "(`controlroom projections status` shows it)", file=sys.stderr)
                return 3
            if waited > PICKUP_WARNING_S and shown.nudge():
                _who_should_start(conn, [p for p in states if p.state == "requested"])
            time.sleep(POLL_S)
    finally:
        shown.close()
    for p in states:
        if p.state == FAILED:
            print(f"{p.projection}: failed: {p.error}", file=sys.stderr)
        else:
            rate = f" ({p.position / p.seconds:,.0f}/s)" if p.seconds else ""
            print(f"{p.projection}: rebuilt up to position {p.position} in {p.seconds or 0:.1f} s{rate}")
    return 1 if any(p.state == FAILED for p in states) else 0


def _who_should_start(conn: psycopg.Connection[Any], waiting: list[Any]) -> None:
    from controlroom.projections.session import holder

    for p in waiting:
        print(f"{p.projection}: waiting for its host ({holder(conn, p.projection) or 'none yet'}) "
              "to take the request", file=sys.stderr)


def _or_unknown(target: int | None) -> str:
    return "?" if target is None else str(target)


class _Display:
    """Progress bars on a terminal, a line every few seconds otherwise."""

    def __init__(self, tty: bool) -> None:
        self.bars: Any = None
        self.tasks: dict[str, Any] = {}
        self.last_line = 0.0
        self.nudged = False
        if tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bars = Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=Console(stderr=True))
            self.bars.start()

    def update(self, states: list[Any]) -> None:
        """Show where each rebuild stands."""
        if self.bars is not None:
            for p in states:
                task = self.tasks.get(p.projection)
                if task is None:
                    task = self.tasks[p.projection] = self.bars.add_task(p.projection, total=None)
                self.bars.update(task, completed=p.position, total=p.target,
                                 description=f"{p.projection} ({p.state})")
            return
        now = time.monotonic()
        if now - self.last_line >= QUIET_REPORT_S:
            self.last_line = now
            print("  ".join(f"{p.projection}: {p.state} {p.position}/{_or_unknown(p.target)}"
                            for p in states), file=sys.stderr)

    def nudge(self) -> bool:
        """True the first time it is asked (say who should pick the request up, once)."""
        first, self.nudged = not self.nudged, True
        return first

    def close(self) -> None:
        """Leave the terminal as it was."""
        if self.bars is not None:
            self.bars.stop()
