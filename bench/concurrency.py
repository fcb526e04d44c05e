"""Concurrency benchmark: real jobs on `controlroom worker` processes fed through Redis.

    python bench/concurrency.py                     # 100 jobs on 2 processes x 8 threads, then 1,000 queued
    python bench/concurrency.py --processes 2 --threads 5 --json /tmp/concurrency.json

Starts `controlroom serve --no-worker` (API, projections, dispatcher, reaper) on a fresh database
and `controlroom worker --processes P --threads T` on a private Redis namespace, then:
  idle     10 one-line jobs, one at a time: submit -> start latency with idle workers
  burst    N jobs (each sleeping 2-5 s while printing ten `::progress` lines) submitted at once:
           all must complete with every progress event in the log; submit -> start p50/p99 and
           the wall time against the ideal (sum of job time / worker slots)
  backlog  workers stopped, 1,000 runs queued: GET run status and submit latency, 1 client each
Everything shares the host's cores. Servers, the database, the Redis keys and temp dirs go on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import random
import secrets
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis
from api import (
    DEFAULT_DATABASE_URL,
    TARGET_GET_P99_MS,
    TARGET_SUBMIT_P99_MS,
    Server,
    controlroom_exe,
    free_port,
    fresh_database,
    host_busy_cores,
    measure,
    percentile,
    redact,
    run_cleaning_up,
    temp_dir,
)

API = "/api/v1"
TARGET_OVERHEAD = 0.20
PROGRESS_STEPS = 10
READY_TIMEOUT_S = 60.0
BURST_TIMEOUT_S = 600.0
IDLE_JOBS = 10
POLL_S = 0.25
SETTLE_TIMEOUT_S = 30.0


def job_body(seconds: float, name: str) -> dict[str, Any]:
    """A job that sleeps `seconds` in ten steps, printing a progress line after each."""
    source = (f"import time\nfor i in range(1, {PROGRESS_STEPS + 1}):\n"
              f"    time.sleep({seconds / PROGRESS_STEPS!r})\n"
              "    print(f'::progress {i * 10} step {i}', flush=True)\nprint('done')\n")
    return {"job_type": "spark_etl", "code": {"files": [{"path": "main.py", "content": source}]},
            "spec": {"description": "concurrency benchmark job", "job_name": name}}


def fifo_makespan(seconds: list[float], slots: int) -> float:
    """Wall time of running the jobs in order on `slots` slots with zero overhead (the tail's share)."""
    free = [0.0] * slots
    for s in seconds:
        heapq.heapreplace(free, free[0] + s)
    return max(free)


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


async def submit_all(http: httpx.AsyncClient, bodies: list[dict[str, Any]], clients: int) -> list[str]:
    """Submit every body with `clients` concurrent requests; the run ids, in order."""
    ids: list[str] = [""] * len(bodies)
    gate = asyncio.Semaphore(clients)

    async def one(i: int) -> None:
        async with gate:
            r = await http.post(f"{API}/jobs/run", json=bodies[i])
            r.raise_for_status()
            ids[i] = r.json()["run_id"]

    await asyncio.gather(*(one(i) for i in range(len(bodies))))
    return ids


async def wait_finished(http: httpx.AsyncClient, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """Poll until every run is finished; their final views."""
    pending, done = set(ids), {}
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} runs unfinished after {timeout:.0f}s")
        for run_id in list(pending):
            run = (await http.get(f"{API}/runs/{run_id}")).json()
            if run["status"] in ("completed", "failed", "cancelled"):
                done[run_id] = run
                pending.discard(run_id)
        await asyncio.sleep(POLL_S)
    return [done[i] for i in ids]


async def progress_events(dsn: str, ids: list[str]) -> int:
    """RunProgressed events in the log for these runs."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM controlroom_events WHERE originator_id = ANY($1::uuid[]) "
            "AND topic LIKE '%RunProgressed'", ids))
    finally:
        await conn.close()


def latencies(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    lat = sorted(ts(r["started_at"]) - ts(r["created_at"]) for r in runs if r.get("started_at"))
    return {"p50_ms": ms(percentile(lat, 50)), "p99_ms": ms(percentile(lat, 99)),
            "max_ms": ms(lat[-1] if lat else None)}


async def idle_scenario(http: httpx.AsyncClient) -> dict[str, Any]:
    """One job at a time on idle workers: the dispatch path's own latency."""
    runs = []
    for n in range(IDLE_JOBS):
        body = job_body(0.0, f"idle-{n}")
        run_id = (await submit_all(http, [body], 1))[0]
        runs += await wait_finished(http, [run_id], 60)
    return {"jobs": IDLE_JOBS, **latencies(runs)}


async def burst_scenario(
    http: httpx.AsyncClient, dsn: str, args: argparse.Namespace
) -> tuple[dict[str, Any], list[str]]:
    rnd = random.Random(args.seed)
    seconds = [round(rnd.uniform(2.0, 5.0), 2) for _ in range(args.jobs)]
    bodies = [job_body(s, f"burst-{n}") for n, s in enumerate(seconds)]
    ids = await submit_all(http, bodies, args.submit_clients)
    runs = await wait_finished(http, ids, BURST_TIMEOUT_S)
    slots = args.processes * args.threads
    wall = max(ts(r["completed_at"]) for r in runs) - min(ts(r["created_at"]) for r in runs)
    ideal = sum(seconds) / slots
    events = await progress_events(dsn, ids)
    return {
        "jobs": args.jobs, "slots": slots, "completed": sum(r["status"] == "completed" for r in runs),
        "job_seconds": round(sum(seconds), 1), "wall_s": round(wall, 2), "ideal_s": round(ideal, 2),
        "overhead": round(wall / ideal - 1, 3),
        "fifo_zero_overhead_s": round(fifo_makespan(seconds, slots), 2), "progress_events": events,
        "progress_expected": args.jobs * PROGRESS_STEPS, **latencies(runs),
    }, ids


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def api_latency(url: str, headers: dict[str, str], ids: list[str], duration: float) -> dict[str, Any]:
    """GET run status and submit, one client each (bench/api.py's harness)."""
    common = {"url": url, "headers": headers, "clients": 1, "processes": 1, "warmup": 1.0,
              "duration": duration, "server_pids": [], "db_dsn": None}
    out = {}
    for kind, target in (("get", "GET /runs/{id}"), ("submit", "POST /jobs/run")):
        r = measure(scenario=kind, target=target, kind=kind, ids=ids, **common)
        out[kind] = {"p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "rps": r.rps, "errors": r.errors}
    return out


async def settle(dsn: str, timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Wait for autovacuum (woken by the burst of inserts) to leave our database: steady state."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
            "AND datname = current_database()"):
            await asyncio.sleep(POLL_S)
    finally:
        await conn.close()


def backlog_scenario(url: str, headers: dict[str, str], ids: list[str], queue_len: Any,
                     dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    """No worker: API latency with nothing queued, then with (at least) `args.queued` runs queued."""
    before = api_latency(url, headers, ids, args.duration)
    backlog = [job_body(2.0, f"backlog-{n}") for n in range(args.queued)]

    async def fill() -> list[str]:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            return await submit_all(http, backlog, args.submit_clients)

    already = queue_len()  # the baseline's submits
    queued_ids = asyncio.run(fill())
    wait_for(lambda: queue_len() >= already + args.queued, 120, "the dispatcher to enqueue the backlog")
    asyncio.run(settle(dsn))
    return {"queued": queue_len(), "empty": before,
            **api_latency(url, headers, ids + queued_ids, args.duration)}


def render(meta: dict[str, Any], idle: dict[str, Any], burst: dict[str, Any],
           backlog: dict[str, Any] | None) -> str:
    ok = "PASS" if burst["overhead"] <= TARGET_OVERHEAD else "MISS"
    lost = burst["progress_expected"] - burst["progress_events"]
    out = [
        "Control Room concurrency benchmark (bench/concurrency.py)",
        f"  host      {meta['host']}",
        f"  workers   {meta['workers']}",
        f"  idle load {meta['host_busy_before_cores']} cores busy before the start"
        + ("  <- OTHER PROCESSES ARE USING THE CPU: results are noisy"
           if (meta["host_busy_before_cores"] or 0) > 0.25 else ""),
        "",
        f"{'what':<52} {'result':<34} verdict",
        f"{'idle workers: submit -> start p50 / p99':<52} "
        f"{idle['p50_ms']} / {idle['p99_ms']} ms{'':<18} -",
        f"{'burst: runs completed':<52} {burst['completed']} / {burst['jobs']:<29} "
        f"{'PASS' if burst['completed'] == burst['jobs'] else 'MISS'}",
        f"{'burst: progress events recorded':<52} {burst['progress_events']} / "
        f"{burst['progress_expected']:<27} {'PASS' if lost == 0 else 'MISS'}",
        f"{'burst: submit -> start p50 / p99 (queueing included)':<52} "
        f"{burst['p50_ms'] / 1000:.2f} / {burst['p99_ms'] / 1000:.2f} s{'':<19} -",
        f"{'burst: wall time vs ideal (job s / slots)':<52} "
        f"{burst['wall_s']:.1f} s vs {burst['ideal_s']:.1f} s (+{burst['overhead']:.0%}){'':<9} "
        f"{ok} (<= +{TARGET_OVERHEAD:.0%})",
        f"{'  (the same order on free slots, zero overhead)':<52} {burst['fifo_zero_overhead_s']:.1f} s",
    ]
    if backlog:
        for label, data in (("no backlog", backlog["empty"]), (f"{backlog['queued']} queued", backlog)):
            for kind, name, target in (("get", "GET", TARGET_GET_P99_MS),
                                       ("submit", "submit", TARGET_SUBMIT_P99_MS)):
                m = data[kind]
                verdict = "PASS" if m["p99_ms"] < target else "MISS"
                out.append(f"{f'{label}: {name} p50 / p99 (1 client)':<52} "
                           f"{m['p50_ms']:.2f} / {m['p99_ms']:.2f} ms{'':<18} "
                           f"{verdict} (p99 < {target:g} ms)")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--processes", type=int, default=2, help="worker processes")
    p.add_argument("--threads", type=int, default=8, help="threads (job slots) per worker process")
    p.add_argument("--submit-clients", type=int, default=16, help="concurrent submitting clients")
    p.add_argument("--queued", type=int, default=1000, help="backlog size (0 skips the backlog scenario)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per backlog scenario")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cleaning_up(lambda stack: run(args, stack))


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    busy_before = host_busy_cores()
    tmp = temp_dir(stack, "controlroom-concurrency-")
    dsn = fresh_database(args.database_url, stack)
    namespace = f"controlroom-bench-{secrets.token_hex(4)}"
    r = redis.Redis.from_url(args.redis_url)
    stack.callback(lambda: [r.delete(k) for k in r.scan_iter(match=f"{namespace}:*", count=1000)])
    port, jwt_secret = free_port(), secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLROOM_")}
    env.update({"DATABASE_URL": dsn, "REDIS_URL": args.redis_url, "CONTROLROOM_REDIS_NAMESPACE": namespace,
                "CONTROLROOM_DATA_DIR": str(tmp / "data"), "CONTROLROOM_JWT_SECRET": jwt_secret,
                "CONTROLROOM_SECRET_KEY": secrets.token_hex(32), "CONTROLROOM_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    api = Server("api", [controlroom_exe(), "serve", "--no-worker"], env, tmp)
    stack.callback(api.stop)
    api.wait_ready(f"{url}/readyz", READY_TIMEOUT_S)
    workers = Server("workers", [controlroom_exe(), "worker", "--processes", str(args.processes),
                                 "--threads", str(args.threads)], env, tmp)
    stack.callback(workers.stop)
    wait_for(lambda: r.zcard(f"{namespace}:__heartbeats__") >= args.processes, READY_TIMEOUT_S,
             "the worker processes")

    from controlroom.api.auth import ALL_SCOPES, issue_token

    headers = {"Authorization": "Bearer " + issue_token(jwt_secret, tenant="bench", sub="bench",
                                                        scopes=ALL_SCOPES, ttl_s=3600)}

    async def drive() -> tuple[dict[str, Any], tuple[dict[str, Any], list[str]]]:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            return await idle_scenario(http), await burst_scenario(http, dsn, args)

    print(f"running {args.jobs} jobs on {args.processes} x {args.threads} worker slots ...", file=sys.stderr)
    idle, (burst, burst_ids) = asyncio.run(drive())
    backlog = None
    if args.queued:
        workers.stop()  # nothing takes the backlog: it stays queued
        print(f"queueing {args.queued} runs, then measuring the API ...", file=sys.stderr)
        queue_len = lambda: int(r.llen(f"{namespace}:runs"))  # noqa: E731
        backlog = backlog_scenario(url, headers, burst_ids, queue_len, dsn, args)
    meta = {"host": f"{os.cpu_count()} cores, {sys.platform}", "database": redact(dsn),
            "host_busy_before_cores": busy_before,
            "workers": f"{args.processes} processes x {args.threads} threads = "
                       f"{args.processes * args.threads} slots (controlroom worker, dramatiq on Redis)"}
    print(render(meta, idle, burst, backlog))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "idle": idle, "burst": burst,
                                               "backlog": backlog}, indent=2))
    complete = burst["completed"] == args.jobs
    return 0 if complete and burst["progress_events"] == burst["progress_expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
