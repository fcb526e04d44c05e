"""Rebuild benchmark: how fast `controlroom projections rebuild --all` replays a log.

    python bench/rebuild.py                          # 2,000 runs x 25 events
    python bench/rebuild.py --runs 5000 --json /tmp/rebuild.json

Fills a fresh database's log through the write side (no projections running, so the log is
all there is), then runs the real `controlroom projections rebuild --all` as a subprocess —
no service is running, so the command hosts the projections itself — and reports, per
projection, the log positions replayed per second as the command printed them, and the
command's wall time. Runs are submitted, report progress, log lines and lineage, and end
cancelled: every projection has work. The database goes on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from api import DEFAULT_DATABASE_URL, controlroom_exe, fresh_database, redact, run_cleaning_up, temp_dir

from controlroom.cli import bootstrap
from controlroom.commands.messages import Lineage, Log, Progress, SubmitJob
from controlroom.settings import Settings

LINE = re.compile(r"^(\w+): rebuilt up to position (\d+) in ([\d.]+) s")
EVENTS_PER_RECORD = 10


def fill(dsn: str, data_dir: Path, runs: int, events: int) -> int:
    """Append `runs` runs of `events` reported events each (plus submit/cancel); the log head."""
    settings = Settings(database_url=dsn, data_dir=data_dir, jwt_secret=secrets.token_hex(16))
    with bootstrap(settings, run_worker=False, run_projections=False) as services:
        commands, position, started = services.commands, 0, time.monotonic()
        for n in range(runs):
            run_id = commands.submit(SubmitJob(
                tenant_id=f"tenant-{n % 10}", created_by="bench", job_type="spark_etl",
                code={"main.py": "print('hi')"}, spec={}, secrets={}, timeout_s=3600,
                max_retries=0, labels={}, callbacks={}, job_name=f"job-{n % 50}",
                request_hash="bench")).run_id
            reported: list[Any] = []
            for i in range(events):
                kind = i % 6
                reported.append(
                    Log(text=f"line {i} of run {n}\n") if kind < 3 else
                    Lineage(source=f"raw.t{n % 200}", target=f"mart.t{(n + i) % 200}") if kind == 5
                    else Progress(percent=100 * i / events, message=f"step {i}"))
            for i in range(0, len(reported), EVENTS_PER_RECORD):
                commands.record(f"tenant-{n % 10}", run_id, reported[i:i + EVENTS_PER_RECORD])
            # A queued run is cancelled as soon as that is asked: its last event.
            position = commands.request_cancel(f"tenant-{n % 10}", run_id, "bench")
            if (n + 1) % 500 == 0:
                print(f"  {n + 1:,} runs, log at {position:,} "
                      f"({position / (time.monotonic() - started):,.0f} events/s)", file=sys.stderr)
        return position


def rebuild(dsn: str, data_dir: Path) -> tuple[float, dict[str, tuple[int, float]]]:
    """Run the command; (wall seconds, projection -> (positions, seconds))."""
    env = {**os.environ, "DATABASE_URL": dsn, "CONTROLROOM_DATA_DIR": str(data_dir)}
    env.pop("REDIS_URL", None)
    started = time.monotonic()
    done = subprocess.run([controlroom_exe(), "projections", "rebuild", "--all"], env=env,
                          capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"rebuild failed ({done.returncode}):\n{done.stderr[-4000:]}")
    found = {m[1]: (int(m[2]), float(m[3])) for m in map(LINE.match, done.stdout.splitlines()) if m}
    return wall, found


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    dsn = fresh_database(args.database_url, stack)
    print(f"database {redact(dsn)}", file=sys.stderr)
    tmp = temp_dir(stack, "controlroom-rebuild-")
    head = fill(dsn, tmp, args.runs, args.events)
    wall, found = rebuild(dsn, tmp)
    print(f"\nlog: {head:,} events ({args.runs:,} runs x {args.events + 3}); "
          f"`projections rebuild --all` wall time {wall:.1f} s (one pipeline feeding them all)\n")
    print(f"{'projection':<12} {'positions':>10} {'seconds':>8} {'per second':>11}")
    for name, (positions, seconds) in found.items():
        print(f"{name:<12} {positions:>10,} {seconds:>8.1f} {positions / seconds:>11,.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "events": head, "runs": args.runs, "wall_s": wall,
            "projections": {n: {"positions": p_, "seconds": s} for n, (p_, s) in found.items()},
        }, indent=2))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--events", type=int, default=22, help="reported events per run")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    return run_cleaning_up(lambda stack: run(args, stack))


if __name__ == "__main__":
    sys.exit(main())
