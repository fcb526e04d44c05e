"""Where does a request's time go? Per-stage server-side timings of the submit and GET paths.

    python bench/profile_stages.py --duration 5            # fresh database, like bench/api.py
    python bench/profile_stages.py --py-spy /tmp/prof      # also record py-spy (raw) per scenario

Starts `controlroom serve --no-worker` *in a subprocess of this script* with timers wrapped
(monkeypatched at run time: product code is not modified) around each stage, drives the same
load as bench/api.py, and after every scenario prints count / mean / p50 / p99 per stage.
The timers themselves cost a few microseconds per stage, so totals are slightly above
bench/api.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
STATS_PATH = "/__stage_stats"

# --------------------------------------------------------------------------- server side

_stats: dict[str, list[float]] = defaultdict(list)
_committed_at: dict[int, float] = {}
_projected_at: dict[int, float] = {}
_lock = threading.Lock()


def _add(name: str, seconds: float) -> None:
    with _lock:
        _stats[name].append(seconds)


def _wrap_async(owner: Any, attr: str, name: str) -> None:
    orig = getattr(owner, attr)

    @functools.wraps(orig)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return await orig(*args, **kwargs)
        finally:
            _add(name, time.perf_counter() - t)

    setattr(owner, attr, wrapper)


def _wrap_sync(owner: Any, attr: str, name: str) -> None:
    orig = getattr(owner, attr)

    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return orig(*args, **kwargs)
        finally:
            _add(name, time.perf_counter() - t)

    setattr(owner, attr, wrapper)


def instrument() -> None:
    """Wrap every stage of the submit and GET paths with a timer."""
    from eventsourcing.postgres import PostgresApplicationRecorder

    from controlroom.adapters import projection_waiter, run_reads
    from controlroom.api import auth, deps, routes_runs
    from controlroom.commands import handlers
    from controlroom.commands.application import ControlRoom
    from controlroom.projections import view

    _wrap_async(auth.BearerAuthMiddleware, "authenticate_request", "auth middleware (incl. jwt)")
    _wrap_sync(auth.TokenVerifier, "verify", "  jwt verify (cached)")
    _wrap_sync(routes_runs, "command", "decode + validate body")
    _wrap_async(deps.Deps, "write", "write: thread hop + command")
    _wrap_sync(handlers.RunCommands, "submit", "  submit command (in thread)")
    _wrap_sync(ControlRoom, "save", "    app.save")
    _wrap_async(deps.Deps, "settle", "settle (wait for projection)")
    _wrap_async(projection_waiter.ProjectionWaiter, "_poll", "  waiter poll (fallback)")
    _wrap_async(run_reads.RunReads, "get", "asyncpg fetchrow (run_status)")
    _wrap_sync(routes_runs, "run_view", "run_view (row -> struct)")

    insert = PostgresApplicationRecorder.insert_events

    def insert_events(self: Any, stored_events: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        ids = insert(self, stored_events, **kwargs)
        done = time.perf_counter()
        _add("      insert_events (LOCK TABLE, INSERT, COMMIT)", done - t)
        for i in ids or ():
            _committed_at[i] = done
        return ids

    PostgresApplicationRecorder.insert_events = insert_events  # type: ignore[method-assign]

    apply = view.ReadModelView.apply

    def view_apply(self: Any, tracking: Any, statements: Any = ()) -> None:
        t = time.perf_counter()
        apply(self, tracking, statements)
        done = time.perf_counter()
        _add("projection: apply txn (projection thread)", done - t)
        committed = _committed_at.pop(tracking.notification_id, None)
        if committed is not None:
            _add("projection: event committed -> applied", done - committed)
            _projected_at[tracking.notification_id] = done

    view.ReadModelView.apply = view_apply  # type: ignore[method-assign]

    on_notify = projection_waiter.ProjectionWaiter._on_notify

    def notified(self: Any, conn: Any, pid: int, channel: str, payload: str) -> None:
        projected = _projected_at.pop(int(payload.rpartition(":")[2]), None)
        if projected is not None:
            _add("waiter: applied -> NOTIFY received", time.perf_counter() - projected)
        on_notify(self, conn, pid, channel, payload)

    projection_waiter.ProjectionWaiter._on_notify = notified  # type: ignore[method-assign]


def _thread_ticks() -> dict[str, int]:
    """CPU ticks per thread name (thread pools folded into one entry per prefix)."""
    out: dict[str, int] = defaultdict(int)
    names = {t.native_id: t.name for t in threading.enumerate()}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        name = names.get(int(task), "non-Python (libpq/asyncpg/uvloop helpers)")
        name = name.rstrip("0123456789").rstrip("_") if name[-1:].isdigit() else name
        out[name] += int(fields[11]) + int(fields[12])
    return out


class StageStats:
    """Outermost ASGI wrapper: times whole requests; GET /__stage_stats returns and resets."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == STATS_PATH:
            with _lock:
                body = json.dumps({"stages": _stats, "threads": _thread_ticks()}).encode()
                _stats.clear()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return None
        name = ("TOTAL POST /jobs/run (asgi)" if path.endswith("/jobs/run")
                else "TOTAL GET /runs/{id} (asgi)" if scope["method"] == "GET" and "/runs/" in path
                else f"TOTAL {scope['method']} other")
        t = time.perf_counter()
        try:
            return await self.app(scope, receive, send)
        finally:
            _add(name, time.perf_counter() - t)


EXPERIMENTS = {
    "async-guard": "requires() returns an async guard (Litestar runs sync guards in a thread)",
    "uvloop": "serve on uvloop (cmd_serve's asyncio.run(Server.serve()) uses the stdlib loop)",
    "projection-async-commit": "SET LOCAL synchronous_commit = off in each projection transaction",
    "no-pre-ping": "POSTGRES_PRE_PING=n: no empty-query round trip per eventsourcing pool checkout",
    "write-threads-2": "2 write threads instead of cli.WRITE_THREADS (8): inserts serialise on LOCK TABLE",
}


def apply_experiments(names: list[str]) -> None:
    """What-if changes, patched in at run time (before the routes are imported)."""
    if "async-guard" in names:
        from litestar.exceptions import PermissionDeniedException

        from controlroom.api import auth

        def requires(scope: str) -> Any:
            async def guard(connection: Any, _: Any) -> None:
                principal = connection.user
                if scope not in principal.scopes and "admin" not in principal.scopes:
                    raise PermissionDeniedException(f"token lacks scope {scope!r}")

            return guard

        auth.requires = requires
    if "no-pre-ping" in names:
        from controlroom.adapters import database

        env_of = database.eventsourcing_env
        database.eventsourcing_env = lambda *a, **k: {**env_of(*a, **k), "POSTGRES_PRE_PING": "n"}
    if "write-threads-2" in names:
        from controlroom import cli

        cli.WRITE_THREADS = 2
    if "projection-async-commit" in names:
        from controlroom.projections import view

        orig_apply = view.ReadModelView.apply

        def apply(self: Any, tracking: Any, statements: Any = ()) -> None:
            ds = self.datastore  # the view's own datastore: only projection writes go through it
            if not getattr(ds, "_bench_async_commit", False):
                orig_tx = ds.transaction

                @contextlib.contextmanager
                def transaction(*, commit: bool = False) -> Any:
                    with orig_tx(commit=commit) as curs:
                        curs.execute("SET LOCAL synchronous_commit = off")
                        yield curs

                ds.transaction, ds._bench_async_commit = transaction, True
            orig_apply(self, tracking, statements)

        view.ReadModelView.apply = apply  # type: ignore[method-assign]


def serve(port: int) -> int:
    """`controlroom serve --no-worker` itself (cli.main), with the timers and experiments patched in."""
    from controlroom import cli

    experiments = [e for e in os.environ.get("BENCH_EXPERIMENTS", "").split(",") if e]
    apply_experiments(experiments)
    instrument()
    build_app = cli.build_app
    cli.build_app = lambda services: StageStats(build_app(services))
    if "uvloop" in experiments:
        import uvloop

        asyncio.run = uvloop.run  # cmd_serve calls asyncio.run(server.serve())
    return cli.main(["serve", "--no-worker", "--port", str(port)])


# --------------------------------------------------------------------------- driver


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)] if values else 0.0


def report(title: str, stats: dict[str, list[float]]) -> str:
    total = next((v for k, v in stats.items() if k.startswith("TOTAL") and "other" not in k), [])
    n = len(total) or 1
    base = sum(total) / n if total else 0.0
    lines = [title, f"  {'stage':<48} {'count':>7} {'mean ms':>8} {'p50 ms':>7} {'p99 ms':>7} "
                    f"{'ms/request':>10} {'% of total':>10}"]
    for name in sorted(stats, key=lambda k: (not k.startswith("TOTAL"), ORDER.get(k.strip(), 99))):
        v = stats[name]
        if not v or "other" in name:
            continue
        per_req = sum(v) / n
        share = f"{100 * per_req / base:9.0f}%" if base else "-"
        lines.append(f"  {name:<48} {len(v):>7} {1000 * sum(v) / len(v):>8.3f} {1000 * _pct(v, 50):>7.3f} "
                     f"{1000 * _pct(v, 99):>7.3f} {1000 * per_req:>10.3f} {share:>10}")
    return "\n".join(lines)


ORDER = {k.strip(): i for i, k in enumerate([
    "auth middleware (incl. jwt)", "jwt verify (cached)", "decode + validate body",
    "write: thread hop + command", "submit command (in thread)", "app.save",
    "insert_events (LOCK TABLE, INSERT, COMMIT)", "settle (wait for projection)",
    "waiter poll (fallback)", "projection: event committed -> applied",
    "projection: apply txn (projection thread)", "waiter: applied -> NOTIFY received",
    "asyncpg fetchrow (run_status)", "run_view (row -> struct)",
])}


def drive(args: argparse.Namespace) -> int:
    import httpx

    sys.path.insert(0, str(BENCH_DIR))
    import api  # bench/api.py: the same harness

    levels = [int(x) for x in args.concurrency.split(",")]
    stack = contextlib.ExitStack()
    try:
        with api.cleanup_on_signals():
            tmp = Path(tempfile.mkdtemp(prefix="controlroom-profile-"))
            stack.callback(shutil.rmtree, tmp, True)
            env = {k: v for k, v in os.environ.items()
                   if k != "DATABASE_URL" and not k.startswith("CONTROLROOM_")}
            env.update(BENCH_EXPERIMENTS=",".join(args.experiment), CONTROLROOM_DATA_DIR=str(tmp / "data"),
                       CONTROLROOM_JWT_SECRET=secrets.token_urlsafe(32))
            if args.embedded:
                tmp.chmod(0o755)
                stack.callback(api._stop_embedded_postgres, tmp / "data")
            else:
                dbname = f"controlroom_bench_{secrets.token_hex(4)}"
                asyncio.run(api._admin(args.database_url, f'CREATE DATABASE "{dbname}"'))
                stack.callback(lambda: asyncio.run(
                    api._admin(args.database_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')))
                env["DATABASE_URL"] = api.with_database(args.database_url, dbname)
            port = api.free_port()
            url = f"http://127.0.0.1:{port}"
            server = api.Server("profiled", [sys.executable, __file__, "--serve", str(port)], env, tmp)
            stack.callback(server.stop)
            server.wait_ready(f"{url}/readyz", 180)
            dsn = api.embedded_dsn(tmp / "data") if args.embedded else env["DATABASE_URL"]
            token = subprocess.run([api.controlroom_exe(), "token", "--tenant", "bench", "--sub", "bench"],
                                   env=env, capture_output=True, text=True, check=True).stdout.strip()
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
            ids: list[str] = []
            if args.experiment:
                print(f"experiments: {', '.join(args.experiment)}", flush=True)
            kinds = [k for k in ("submit", "get") if k in args.scenarios.split(",")]
            for kind in kinds:
                for c in levels:
                    before = httpx.get(url + STATS_PATH).json()["threads"]  # also resets the stages
                    spy = None
                    if args.py_spy:
                        Path(args.py_spy).mkdir(parents=True, exist_ok=True)
                        out = Path(args.py_spy) / f"{kind}-c{c}.txt"
                        spy = subprocess.Popen(
                            ["py-spy", "record", "-p", str(server.pid), "-r", "250", "--threads", "--gil",
                             "--nonblocking", "-d", str(int(args.warmup + args.duration)), "-f", "raw",
                             "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        stack.callback(lambda s=spy: s.poll() is None and s.kill())
                    if kind == "get" and not ids:
                        ids = api._event_loop_run(api.seed_runs(url, headers, api.SEED_RUNS))
                    r = api.measure(scenario=kind, target=kind, url=url, headers=headers, kind=kind,
                                    clients=c, processes=1, ids=ids, warmup=args.warmup,
                                    duration=args.duration, server_pids=[server.pid], db_dsn=dsn,
                                    new_ids=ids if kind == "submit" else None)
                    dump = httpx.get(url + STATS_PATH).json()
                    stats, after = dump["stages"], dump["threads"]
                    wall = args.warmup + args.duration + 0.2
                    if spy:
                        spy.wait(timeout=60)
                    print(report(f"\n{kind} c={c}: {r.rps:.0f} req/s, client p50 {r.p50_ms:.2f} ms, "
                                 f"p99 {r.p99_ms:.2f} ms, server CPU {r.server_cpu_us or 0:.0f} us/request, "
                                 f"cores {r.cpu_cores} (warm-up included in the stage counts)", stats),
                          flush=True)
                    clk = os.sysconf("SC_CLK_TCK")
                    per_thread = sorted(((after[k] - before.get(k, 0), k) for k in after), reverse=True)
                    print("  server CPU by thread (warm-up included): " + ", ".join(
                        f"{k} {ticks / clk / wall:.2f} cores ({1e6 * ticks / clk / max(1, total):.0f} us/req)"
                        for ticks, k in per_thread if ticks
                        for total in [sum(len(v) for n, v in stats.items() if n.startswith("TOTAL"))]),
                        flush=True)
    except KeyboardInterrupt:
        return 130
    finally:
        with api.uninterruptible():
            stack.close()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                             "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--embedded", action="store_true", help="embedded Postgres in a temp data dir")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--concurrency", default="1,16")
    p.add_argument("--experiment", action="append", default=[], choices=sorted(EXPERIMENTS),
                   help="what-if, patched into the server at run time (repeatable): "
                        + "; ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items()))
    p.add_argument("--scenarios", default="submit,get", help="submit,get (default both)")
    p.add_argument("--py-spy", metavar="DIR", help="record py-spy raw profiles of the server per scenario")
    args = p.parse_args()
    if args.serve:
        return serve(args.serve)
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
