"""HTTP benchmark of Control Room's submit and GET-run paths, next to a bare asyncpg+Litestar ceiling.

    python bench/api.py                      # start a server on a fresh database, 10 s per scenario
    python bench/api.py --duration 5 --json /tmp/bench.json
    python bench/api.py --embedded           # embedded Postgres in a temp data dir
    python bench/api.py --url http://host:8000 --token $TOKEN   # an already running server
    python bench/api.py --scenarios mixed --concurrency 64 --clients-processes 4 --duration 60
    python bench/api.py --scenarios ping --concurrency 1,16 --client httpx   # the harness's own ceiling

Scenarios (each: warm-up excluded, then a fixed measured duration, N concurrent clients, each with
one keep-alive connection of its own; --client aiohttp (default when installed) or httpx):
  submit   POST /api/v1/jobs/run (answers after the read-your-writes wait)
  get      GET /api/v1/runs/{id} on ids created by the submit scenarios
  ceiling  GET /rows/{id} on bench/ceiling_app.py: bare Litestar, one asyncpg PK SELECT, same uvicorn
  ping     (opt-in: --scenarios ...,ping) GET /ping on the ceiling app, no database (stack + harness)
  events   (opt-in: --scenarios ...,events or --events) POST /api/v1/runs/{id}/events: each client
           first submits a run of its own (unmeasured), then reports log lines to it, --event-batch
           lines per request (default "1,100": one scenario per batch size); prints requests/s,
           events/s and the serve process's CPU per request
  mixed    (opt-in: --scenarios ...,mixed) the realistic write load: each client submits a run, posts
           6 single-line log bodies to it (as events1), submits the next run, and so on; one latency
           distribution for all requests, plus submits/s and event posts/s. Nothing may be lost:
           once the read models have caught up, every run submitted is read back and must answer
           200 with log_lines equal to its accepted (202) posts; prints "lost: N events, M runs"
           (a loss misses the targets). Its target's load: --concurrency 64 --clients-processes 4

The load generator's CPU per request (lg us/req) is printed next to the server's; `ping` (no
database) shows the most the harness and the web stack reach together. aiohttp costs the load
generator several times less CPU per request than httpx, leaving more of the shared cores to the
server.

Everything (load generator, servers, Postgres) shares the host's cores: absolute numbers are
pessimistic; ratios and server CPU per request are the meaningful numbers. Servers run as
subprocesses; they, the temporary database and the temporary data directory are removed on exit,
Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import multiprocessing as mp
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import httpx
from loadclient import CLIENTS, DEFAULT_CLIENT, SlotClient, describe, slot_client

API = "/api/v1"
SUBMIT_PATH = f"{API}/jobs/run"
JOB_BODY = json.dumps({
    "job_type": "spark_etl",
    "code": {"files": [{"path": "main.py", "content": "print('hello from bench')\n"}]},
    "spec": {"description": "benchmark job", "job_name": "bench"},
    "labels": {"origin": "bench"},
}).encode()
CEILING_ROWS = 10_000
SEED_RUNS = 200
SCENARIOS = {"submit", "get", "ceiling", "ping", "events", "mixed"}
MIXED_EVENT_POSTS = 6
"""Single-line log posts after each submit in the mixed scenario."""
LOG_LINE = "bench: a line of job output, about as long as most are (0123456789abcdef)"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
BENCH_DIR = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

TARGET_GET_RATIO = 0.70
TARGET_GET_P99_MS = 3.0
TARGET_SUBMIT_P99_MS = 30.0
TARGET_SUBMIT_RPS = 300.0
TARGET_EVENT_POSTS = 1500.0
"""Single-event POSTs per second at 16 clients."""
TARGET_EVENTS_BATCHED = 20000.0
"""Events per second, in batches of 100, at 16 clients."""
TARGET_MIXED_P99_MS = 100.0
TARGET_MIXED_SHAPE = (4, 16)
"""Load-generator processes x clients each: the mixed target's load."""


# --------------------------------------------------------------------------- load generation


@dataclass
class SlotsResult:
    """What one load-generating process measured."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests in window
    errors: int = 0
    first_error: str | None = None
    ids: list[str] = field(default_factory=list)  # run ids created (submit), warm-up included
    counts: dict[str, int] = field(default_factory=dict)
    """Successful requests in the window by what they were ("submit", "event")."""
    accepted: dict[str, int] = field(default_factory=dict)
    """Mixed: every run submitted (warm-up included) -> event posts answered 202."""
    split: dict[str, list[float]] = field(default_factory=dict)
    """Mixed: the window's latencies again, by what the request was."""


def events_body(batch: int) -> bytes:
    """`batch` log lines as one request body (a list, even of one: what workers send)."""
    return json.dumps([{"event_type": "log", "text": LOG_LINE, "stream": "stdout"}
                       for _ in range(batch)]).encode()


def _run_id(headers: Any) -> str:
    return str(headers["location"].rpartition("/")[2])


def _failure(status: int, body: bytes) -> str:
    return f"HTTP {status}: {body[:200].decode(errors='replace')}"


async def _own_run(client: SlotClient) -> str:
    """A run for one events client (its own: clients don't race on one run's version)."""
    for _ in range(50):
        status, headers, body = await client.post(SUBMIT_PATH, JOB_BODY)
        if status == 202:
            return _run_id(headers)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"could not submit a run for an events client: {_failure(status, body)}")


async def catch_up(url: str, headers: dict[str, str], patience_s: float = 300.0) -> float:
    """Seconds until the read models have caught up with the log (a submission is answered
    visible): event posts don't wait for them, so after a burst they may lag behind."""
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as client:
        while time.monotonic() - t0 < patience_s:
            r = await client.post(SUBMIT_PATH, content=JOB_BODY)
            if r.status_code == 202 and r.headers.get("run-visible") != "false":
                break
    return round(time.monotonic() - t0, 2)


Request = Callable[[], Awaitable[tuple[str, bool, str]]]
"""Issues one request; answers (what it was, ok, detail: the run id of a submit, else an error)."""


def _request_maker(kind: str, client: SlotClient, ids: list[str], rnd: random.Random,
                   res: SlotsResult) -> Request:
    """The next request of `kind` for one client slot."""
    if kind.startswith("events"):
        body = events_body(int(kind.removeprefix("events")))
        path = f"{API}/runs/{ids[0]}/events"

        async def post_events() -> tuple[str, bool, str]:
            status, _, text = await client.post(path, body)
            return ("event", True, "") if status == 202 else ("event", False, _failure(status, text))

        return post_events
    if kind == "submit":
        async def submit() -> tuple[str, bool, str]:
            status, headers, text = await client.post(SUBMIT_PATH, JOB_BODY)
            if status != 202:
                return "submit", False, _failure(status, text)
            return "submit", True, _run_id(headers)

        return submit
    if kind == "mixed":
        return _mixed(client, res.accepted)
    if kind == "get":
        paths = [f"{API}/runs/{i}" for i in ids]
    elif kind == "ceiling":
        paths = [f"/rows/{i}" for i in range(1, CEILING_ROWS + 1)]
    elif kind == "ping":
        paths = ["/ping"]
    else:
        raise ValueError(kind)
    choice = rnd.choice

    async def get() -> tuple[str, bool, str]:
        status, _, text = await client.get(choice(paths))
        return ("get", True, "") if status == 200 else ("get", False, _failure(status, text))

    return get


def _mixed(client: SlotClient, accepted: dict[str, int]) -> Request:
    """Submit a run, post MIXED_EVENT_POSTS single-line log bodies to it, submit the next one.

    Every 202 is tallied on its run in `accepted`, so the run's log_lines can be checked later.
    A failed post still counts as one of the run's posts: a client moves on, it doesn't retry."""
    body = events_body(1)
    run: str | None = None
    path = ""
    posted = 0

    async def step() -> tuple[str, bool, str]:
        nonlocal run, path, posted
        if run is None or posted >= MIXED_EVENT_POSTS:
            run = None  # a failed submit is followed by another submit
            status, headers, text = await client.post(SUBMIT_PATH, JOB_BODY)
            if status != 202:
                return "submit", False, _failure(status, text)
            run, posted = _run_id(headers), 0
            path = f"{API}/runs/{run}/events"
            accepted[run] = 0
            return "submit", True, run
        posted += 1
        status, _, text = await client.post(path, body)
        if status != 202:
            return "event", False, _failure(status, text)
        accepted[run] += 1
        return "event", True, ""

    return step


async def run_slots(
    url: str, headers: dict[str, str], kind: str, slots: int, ids: list[str],
    t_start: float, t_end: float, seed: int, client_kind: str = DEFAULT_CLIENT,
) -> SlotsResult:
    """Drive `slots` concurrent clients until t_end; record what completes in [t_start, t_end]."""
    res = SlotsResult()
    monotonic = time.monotonic

    async def slot(i: int) -> None:
        async with slot_client(client_kind, url, headers) as client:
            own = [await _own_run(client)] if kind.startswith("events") else ids
            request = _request_maker(kind, client, own, random.Random(seed * 1000 + i), res)
            lat, counts, errors = res.latencies, res.counts, client.errors
            split = res.split if kind == "mixed" else None
            while True:
                t0 = monotonic()
                if t0 >= t_end:
                    return
                try:
                    what, ok, detail = await request()
                except errors as e:
                    what, ok, detail = kind, False, f"{type(e).__name__}: {e}"
                t1 = monotonic()
                if ok and kind == "submit":
                    res.ids.append(detail)
                if t_start <= t1 <= t_end:
                    if ok:
                        lat.append(t1 - t0)
                        counts[what] = counts.get(what, 0) + 1
                        if split is not None:
                            split.setdefault(what, []).append(t1 - t0)
                    else:
                        res.errors += 1
                        res.first_error = res.first_error or detail
                if not ok and t1 < t_start:
                    await asyncio.sleep(0.01)  # failing during warm-up: don't spin

    await asyncio.gather(*(slot(i) for i in range(slots)))
    return res


async def verify_mixed(url: str, headers: dict[str, str], accepted: dict[str, int],
                       client_kind: str, concurrency: int = 16) -> dict[str, Any]:
    """Read every run of a mixed scenario back: it must exist, with one log line per accepted post."""
    todo = iter(accepted.items())
    out: dict[str, Any] = {"runs_checked": 0, "lost_events": 0, "lost_runs": 0, "surplus_runs": 0,
                           "first_loss": None}

    def loss(what: str) -> None:
        out["first_loss"] = out["first_loss"] or what

    async def reader() -> None:
        async with slot_client(client_kind, url, headers) as client:
            for run_id, posts in todo:
                out["runs_checked"] += 1
                try:
                    status, _, body = await client.get(f"{API}/runs/{run_id}")
                except client.errors as e:
                    status, body = 0, f"{type(e).__name__}: {e}".encode()
                if status != 200:
                    out["lost_runs"] += 1
                    loss(f"run {run_id}: {_failure(status, body)}")
                    continue
                lines = json.loads(body)["log_lines"]
                if lines < posts:
                    out["lost_events"] += posts - lines
                    loss(f"run {run_id}: {lines} log line(s) for {posts} accepted post(s)")
                elif lines > posts:
                    # more lines than 202s: a post the server kept although the client saw it fail
                    out["surplus_runs"] += 1
                    loss(f"run {run_id}: {lines} log line(s) for only {posts} accepted post(s)")

    await asyncio.gather(*(reader() for _ in range(concurrency)))
    return out


async def seed_runs(url: str, headers: dict[str, str], n: int) -> list[str]:
    """Submit `n` runs (not measured) so GET has something to read."""
    ids = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as client:
        for _ in range(n):
            r = await client.post(SUBMIT_PATH, content=JOB_BODY)
            if r.status_code == 202:
                ids.append(r.headers["location"].rpartition("/")[2])
    return ids


def _event_loop_run(coro: Any) -> Any:
    """Run with uvloop when available: the load generator must be as cheap as possible."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _child(conn: Any, url: str, headers: dict[str, str], kind: str, slots: int, ids: list[str],
           seed: int, client_kind: str) -> None:
    """A load-generating process (--clients-processes > 1)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    try:
        conn.send("ready")
        if not conn.poll(300):
            return
        t_start, t_end = conn.recv()
        conn.send(_event_loop_run(run_slots(url, headers, kind, slots, ids, t_start, t_end, seed,
                                            client_kind)))
    except (EOFError, BrokenPipeError):
        return  # the parent gave up (Ctrl-C): just leave


# --------------------------------------------------------------------------- CPU accounting


def _pid_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])  # utime + stime, all threads
    except (OSError, ValueError, IndexError):
        return None


def _host_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole host."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])
    return total - idle, total


@dataclass
class CpuSample:
    t: float
    host: tuple[int, int] | None
    groups: dict[str, dict[int, int]]  # group -> pid -> ticks


def cpu_sample(groups: dict[str, list[int]]) -> CpuSample:
    ticks: dict[str, dict[int, int]] = {}
    for name, members in groups.items():
        ticks[name] = {p: t for p in members if (t := _pid_ticks(p)) is not None}
    return CpuSample(time.monotonic(), _host_ticks(), ticks)


def cpu_usage(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """Cores used between two samples: per group, 'other' (everything else on the host), 'host'."""
    wall = b.t - a.t
    if wall <= 0:
        return {}
    out: dict[str, float] = {}
    for name, before in a.groups.items():
        after = b.groups.get(name, {})
        common = [p for p in before if p in after]
        if common:
            out[name] = sum(after[p] - before[p] for p in common) / CLK_TCK / wall
    if a.host and b.host:
        busy = (b.host[0] - a.host[0]) / CLK_TCK / wall
        out["other"] = max(0.0, busy - sum(out.values()))
        out["host"] = busy
    return {k: round(v, 2) for k, v in out.items()}


def host_busy_cores(seconds: float = 1.0) -> float | None:
    """Cores the host is busy with right now (before we start anything heavy)."""
    a = _host_ticks()
    time.sleep(seconds)
    b = _host_ticks()
    return None if not a or not b else round((b[0] - a[0]) / CLK_TCK / seconds, 2)


async def postgres_backend_pids(dsn: str | None) -> list[int]:
    """Local pids of the Postgres backends serving our database (their CPU is the 'pg' column)."""
    if not dsn or (urlsplit(dsn).hostname or "localhost") not in ("127.0.0.1", "localhost", "::1"):
        return []
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return []
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                "AND pid <> pg_backend_pid()")
    finally:
        await conn.close()
    return [r["pid"] for r in rows if os.path.exists(f"/proc/{r['pid']}/stat")]


async def server_connections(dsn: str | None) -> int | None:
    """PostgreSQL connections Control Room processes hold on our database (they name themselves
    `controlroom-<kind>:<pid>`), counted as a scenario's window closes: under load."""
    if not dsn:
        return None
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'controlroom-%'"))
    finally:
        await conn.close()


# --------------------------------------------------------------------------- scenario runner


@dataclass
class Result:
    """One measured scenario."""

    scenario: str
    target: str
    clients: int
    processes: int
    duration_s: float
    requests: int
    errors: int
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    cpu_cores: dict[str, float]
    connections: int | None = None
    """Connections the server held as the window closed (every process of ours, by name)."""
    first_error: str | None = None
    rounds_rps: list[float] = field(default_factory=list)
    events_per_request: int = 0
    """Events in each request (events scenarios), else 0."""
    catch_up_s: float | None = None
    """Events and mixed scenarios: how long after the window the read models took to show everything."""
    client: str = DEFAULT_CLIENT
    """The load generator's HTTP client."""
    submits_per_s: float | None = None
    """Mixed: successful submits per second."""
    event_posts_per_s: float | None = None
    """Mixed: accepted event posts per second."""
    check: dict[str, Any] | None = None
    """Mixed: every run read back after catch-up (verify_mixed's counts)."""
    split_ms: dict[str, dict[str, float | None]] | None = None
    """Mixed: p50/p99 of submits and of event posts on their own (what the p99 is made of)."""

    @property
    def nothing_lost(self) -> bool | None:
        """Mixed: every run answered, with exactly one log line per accepted post."""
        if self.check is None:
            return None
        c = self.check
        return c["lost_runs"] == 0 and c["lost_events"] == 0 and c["surplus_runs"] == 0

    @property
    def loadgen_cpu_us(self) -> float | None:
        """Load-generator CPU time per request (µs): the harness's own cost."""
        cores = self.cpu_cores.get("loadgen")
        return None if cores is None or not self.rps else 1e6 * cores / self.rps

    @property
    def events_per_s(self) -> float | None:
        """Events recorded per second (events scenarios)."""
        return round(self.rps * self.events_per_request, 1) if self.events_per_request else None

    @property
    def server_cpu_us(self) -> float | None:
        """Server CPU time per request (µs): robust to noise from other processes on the host."""
        cores = self.cpu_cores.get("server")
        return None if cores is None or not self.rps else 1e6 * cores / self.rps


def median_round(results: list[Result]) -> Result:
    """The round with the median throughput (lower median), remembering every round's req/s."""
    ordered = sorted(results, key=lambda r: r.rps)
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.rounds_rps = [r.rps for r in results]
    return chosen


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


def measure(
    *, scenario: str, target: str, url: str, headers: dict[str, str], kind: str, clients: int,
    processes: int, ids: list[str], warmup: float, duration: float, server_pids: list[int],
    db_dsn: str | None, new_ids: list[str] | None = None, client: str = DEFAULT_CLIENT,
) -> Result:
    """Run one scenario with `clients` concurrent clients spread over `processes` processes.

    Mixed: after the window, once the read models have caught up, every run is read back."""
    processes = max(1, min(processes, clients))
    seed = random.randrange(1 << 30)
    lg_pids: list[int] = []
    children: list[tuple[Any, Any]] = []
    parts: list[SlotsResult] = []
    samples: list[CpuSample] = []
    conns: list[int | None] = []
    if processes == 1:
        lg_pids = [os.getpid()]

        async def local() -> SlotsResult:
            t_start = time.monotonic() + warmup
            t_end = t_start + duration
            async def sampler() -> None:
                await asyncio.sleep(max(0.0, t_start - 0.2 - time.monotonic()))
                groups = {"loadgen": lg_pids, "server": server_pids,
                          "pg": await postgres_backend_pids(db_dsn)}
                await asyncio.sleep(max(0.0, t_start - time.monotonic()))
                samples.append(cpu_sample(groups))
                await asyncio.sleep(max(0.0, t_end - time.monotonic()))
                samples.append(cpu_sample(groups))
                conns.append(await server_connections(db_dsn))

            task = asyncio.create_task(sampler())
            res = await run_slots(url, headers, kind, clients, ids, t_start, t_end, seed, client)
            await task
            return res

        parts.append(_event_loop_run(local()))
    else:
        ctx = mp.get_context("spawn")
        per = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
        try:
            for i, n in enumerate(per):
                parent_conn, child_conn = ctx.Pipe()
                proc = ctx.Process(target=_child, daemon=True,
                                   args=(child_conn, url, headers, kind, n, ids, seed + i, client))
                proc.start()
                children.append((proc, parent_conn))
            for proc, conn in children:
                if not conn.poll(60) or conn.recv() != "ready":
                    raise RuntimeError("a load-generator process did not start")
                lg_pids.append(proc.pid)
            lg_pids.append(os.getpid())  # this process only waits, but it is part of the harness
            t_start = time.monotonic() + 0.2 + warmup  # 0.2 s: let every child open its clients
            t_end = t_start + duration
            for _, conn in children:
                conn.send((t_start, t_end))
            time.sleep(max(0.0, t_start - 0.2 - time.monotonic()))
            groups = {"loadgen": lg_pids, "server": server_pids,
                      "pg": asyncio.run(postgres_backend_pids(db_dsn))}
            time.sleep(max(0.0, t_start - time.monotonic()))
            samples.append(cpu_sample(groups))
            time.sleep(max(0.0, t_end - time.monotonic()))
            samples.append(cpu_sample(groups))
            conns.append(asyncio.run(server_connections(db_dsn)))
            for proc, conn in children:
                if not conn.poll(120):
                    raise RuntimeError(f"load-generator process {proc.pid} did not report")
                parts.append(conn.recv())
        finally:
            finished = len(parts) == len(children)
            for proc, conn in children:
                conn.close()
                proc.join(timeout=2 if finished else 0)
                if proc.is_alive():
                    proc.kill()
                    proc.join()

    lat = sorted(x for p in parts for x in p.latencies)
    errors = sum(p.errors for p in parts)
    if new_ids is not None:
        for p in parts:
            new_ids.extend(p.ids)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 3)

    def per_s(what: str) -> float:
        return round(sum(p.counts.get(what, 0) for p in parts) / duration, 1)

    mixed: dict[str, Any] = {}
    if kind == "mixed":
        accepted = {run: n for p in parts for run, n in p.accepted.items()}
        by = {what: sorted(x for p in parts for x in p.split.get(what, [])) for what in ("submit", "event")}
        mixed = {"submits_per_s": per_s("submit"), "event_posts_per_s": per_s("event"),
                 "split_ms": {what: {"p50": ms(percentile(v, 50)), "p99": ms(percentile(v, 99))}
                              for what, v in by.items()},
                 "catch_up_s": _event_loop_run(catch_up(url, headers))}
        mixed["check"] = _event_loop_run(verify_mixed(url, headers, accepted, client))

    return Result(
        scenario=scenario, target=target, clients=clients, processes=processes, duration_s=duration,
        requests=len(lat), errors=errors, rps=round(len(lat) / duration, 1),
        p50_ms=ms(percentile(lat, 50)), p90_ms=ms(percentile(lat, 90)), p99_ms=ms(percentile(lat, 99)),
        max_ms=ms(lat[-1] if lat else None), mean_ms=ms(sum(lat) / len(lat) if lat else None),
        cpu_cores=cpu_usage(samples[0], samples[1]) if len(samples) == 2 else {},
        connections=conns[0] if conns else None,
        first_error=next((p.first_error for p in parts if p.first_error), None),
        events_per_request=int(kind.removeprefix("events")) if kind.startswith("events") else 0,
        client=client, **mixed,
    )


# --------------------------------------------------------------------------- servers and databases


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(dsn: str, dbname: str) -> str:
    return urlsplit(dsn)._replace(path=f"/{dbname}").geturl()


def redact(dsn: str) -> str:
    parts = urlsplit(dsn)
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl() \
        if parts.password else dsn


async def _admin(dsn: str, sql: str, patience_s: float = 60.0) -> None:
    """Run one statement; wait for a free connection slot if the server is full (shared hosts)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=10)
            break
        except (asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError) as e:
            if time.monotonic() > deadline:
                raise
            print(f"  ({type(e).__name__} on {redact(dsn)}; retrying)", file=sys.stderr)
            await asyncio.sleep(1.0)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Server:
    """A server subprocess in its own session (Ctrl-C reaches us, we stop it properly)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_ready(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError as e:
                last = str(e)
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (graceful: uvicorn shutdown, projections, embedded Postgres), then SIGKILL."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # anything it left in its session (it has none normally)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def _stop_embedded_postgres(data_dir: Path) -> None:
    """If the server left its embedded Postgres running (it was killed), fast-shutdown it."""
    pidfile = data_dir / "postgres" / "data" / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)  # "fast" shutdown
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def embedded_dsn(data_dir: Path) -> str:
    """DSN of the embedded Postgres a server started in `data_dir` (see adapters/postgres/embedded.py)."""
    lines = (data_dir / "postgres" / "data" / "postmaster.pid").read_text().splitlines()
    password = quote((data_dir / "postgres" / "password").read_text().strip(), safe="")
    return f"postgresql://controlroom:{password}@127.0.0.1:{int(lines[3])}/controlroom"


def controlroom_exe() -> str:
    exe = Path(sys.executable).parent / "controlroom"
    return str(exe) if exe.exists() else (shutil.which("controlroom") or "controlroom")


@contextlib.contextmanager
def cleanup_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` (servers, databases) runs."""

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def uninterruptible() -> Iterator[None]:
    """Cleanup must finish even if Ctrl-C is pressed again (or SIGTERM arrives meanwhile)."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_cleaning_up(run: Callable[[contextlib.ExitStack], int]) -> int:
    """Run a benchmark; what it put on the stack (servers, databases, temp dirs) goes at the end,
    on Ctrl-C or SIGTERM too, even if Ctrl-C is pressed again meanwhile."""
    stack = contextlib.ExitStack()
    with cleanup_on_signals():
        try:
            return run(stack)
        except KeyboardInterrupt:
            print("\ninterrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            with uninterruptible():
                stack.close()


def fresh_database(admin_dsn: str, stack: contextlib.ExitStack) -> str:
    """A new database on `admin_dsn`'s server, dropped when `stack` closes: its DSN."""
    dbname = f"controlroom_bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(admin_dsn, f'CREATE DATABASE "{dbname}"'))
    stack.callback(lambda: asyncio.run(
        _admin(admin_dsn, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')))
    return with_database(admin_dsn, dbname)


def temp_dir(stack: contextlib.ExitStack, prefix: str) -> Path:
    """A temporary directory removed when `stack` closes."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    return tmp


# --------------------------------------------------------------------------- report


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def evaluate(results: list[Result], levels: list[int]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    by = {(r.scenario, r.clients): r for r in results}
    ratios: dict[str, float] = {}
    for c in levels:
        g, ceil_ = by.get(("get", c)), by.get(("ceiling", c))
        if g and ceil_ and ceil_.rps:
            ratios[f"get_over_ceiling_c{c}"] = round(g.rps / ceil_.rps, 3)
        if g and ceil_ and g.server_cpu_us and ceil_.server_cpu_us:
            ratios[f"get_over_ceiling_cpu_c{c}"] = round(ceil_.server_cpu_us / g.server_cpu_us, 3)
        s = by.get(("submit", c))
        if s and ceil_ and ceil_.rps:
            ratios[f"submit_over_ceiling_c{c}"] = round(s.rps / ceil_.rps, 3)
    targets: list[dict[str, Any]] = []
    for c in levels:
        r = ratios.get(f"get_over_ceiling_c{c}")
        targets.append({"target": f"GET run status >= {TARGET_GET_RATIO:.0%} of ceiling ({c} clients)",
                        "value": None if r is None else f"GET / ceiling = {r:.2f}",
                        "ok": None if r is None else r >= TARGET_GET_RATIO})
    g1, s1, s16 = by.get(("get", 1)), by.get(("submit", 1)), by.get(("submit", 16))
    targets.append({"target": f"GET p99 < {TARGET_GET_P99_MS:g} ms (1 client)",
                    "value": None if not g1 or g1.p99_ms is None else f"{g1.p99_ms:.2f} ms",
                    "ok": None if not g1 or g1.p99_ms is None else g1.p99_ms < TARGET_GET_P99_MS})
    targets.append({"target": f"submit p99 < {TARGET_SUBMIT_P99_MS:g} ms (1 client)",
                    "value": None if not s1 or s1.p99_ms is None else f"{s1.p99_ms:.2f} ms",
                    "ok": None if not s1 or s1.p99_ms is None else s1.p99_ms < TARGET_SUBMIT_P99_MS})
    targets.append({"target": f">= {TARGET_SUBMIT_RPS:g} submits/s (16 clients)",
                    "value": None if not s16 else f"{s16.rps:.0f} /s",
                    "ok": None if not s16 else s16.rps >= TARGET_SUBMIT_RPS})
    if e1 := by.get(("events1", 16)):
        targets.append({"target": f">= {TARGET_EVENT_POSTS:,.0f} single-event POSTs/s (16 clients)",
                        "value": f"{e1.rps:,.0f} /s", "ok": e1.rps >= TARGET_EVENT_POSTS})
    if e100 := by.get(("events100", 16)):
        targets.append({"target": f">= {TARGET_EVENTS_BATCHED:,.0f} events/s, 100 a POST (16 clients)",
                        "value": f"{e100.events_per_s or 0:,.0f} /s",
                        "ok": (e100.events_per_s or 0) >= TARGET_EVENTS_BATCHED})
    targets += mixed_targets([r for r in results if r.scenario == "mixed"])
    return ratios, targets


def _shape(r: Result) -> tuple[int, int] | None:
    """(processes, clients each) when the clients are spread evenly."""
    return None if r.clients % r.processes else (r.processes, r.clients // r.processes)


def mixed_targets(results: list[Result]) -> list[dict[str, Any]]:
    """The p99 target at its load; losing anything misses at every load."""
    procs, each = TARGET_MIXED_SHAPE
    targets: list[dict[str, Any]] = []
    main = next((r for r in results if _shape(r) == TARGET_MIXED_SHAPE), None)
    if results:
        ok = None if not main or main.p99_ms is None else (
            main.p99_ms < TARGET_MIXED_P99_MS and bool(main.nothing_lost))
        value = "not run at this load" if not main else f"{_fmt(main.p99_ms)} ms, lost {_lost(main)}"
        target = f"mixed {procs} × {each} clients: p99 < {TARGET_MIXED_P99_MS:g} ms, nothing lost"  # noqa: RUF001
        targets.append({"target": target, "value": value, "ok": ok})
    for r in results:
        if r is not main:
            shape = _shape(r)
            load = f"{shape[0]} × {shape[1]}" if shape else f"{r.clients} over {r.processes}"  # noqa: RUF001
            targets.append({"target": f"mixed {load} clients: nothing lost",
                            "value": f"lost {_lost(r)}", "ok": r.nothing_lost})
    return targets


def _lost(r: Result) -> str:
    c = r.check or {}
    extra = f", {c['surplus_runs']} runs over" if c.get("surplus_runs") else ""
    return f"{c.get('lost_events', '?')} ev, {c.get('lost_runs', '?')} runs{extra}"


def render(meta: dict[str, Any], results: list[Result], ratios: dict[str, float],
           targets: list[dict[str, Any]]) -> str:
    out = [
        "Control Room API benchmark (bench/api.py)",
        f"  host      {meta['host']}",
        "  NOTE      the load generator, the server(s) and Postgres all run on these same "
        f"{meta['cpus']} cores:",
        "            absolute numbers are pessimistic; ratios and srv us/req (server CPU per request) are "
        "the meaningful numbers",
        f"  idle load {_fmt(meta['host_busy_before_cores'])} cores busy just before the first scenario"
        + ("  <- OTHER PROCESSES ARE USING THE CPU: results are noisy"
           if (meta["host_busy_before_cores"] or 0) > 0.25 else ""),
        f"  server    {meta['server']}",
        f"  database  {meta['database']}",
        f"  ceiling   {meta['ceiling']}",
        f"  client    {meta['client']}",
        f"  harness   {meta['harness']}",
        "",
        f"{'scenario':<9} {'route':<26} {'clients':>7} {'procs':>5} {'requests':>8} {'req/s':>8} "
        f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6} {'srv us/req':>10} "
        f"{'lg us/req':>9} {'conns':>5}  "
        "cores lg/srv/pg/other",
    ]
    for r in results:
        cpu = r.cpu_cores
        cpu_s = "/".join(_fmt(cpu.get(k), ".1f") for k in ("loadgen", "server", "pg", "other"))
        out.append(
            f"{r.scenario:<9} {r.target:<26} {r.clients:>7} {r.processes:>5} {r.requests:>8} "
            f"{r.rps:>8.1f} {_fmt(r.p50_ms):>7} {_fmt(r.p90_ms):>7} {_fmt(r.p99_ms):>7} "
            f"{_fmt(r.max_ms):>7} {r.errors:>6} {_fmt(r.server_cpu_us, '.0f'):>10} "
            f"{_fmt(r.loadgen_cpu_us, '.0f'):>9} {_fmt(r.connections, 'd'):>5}  {cpu_s}"
        )
        if len(r.rounds_rps) > 1:
            out[-1] += "  rounds: " + " ".join(f"{x:.0f}" for x in r.rounds_rps)
        if r.check is not None:
            chk, sp = r.check, r.split_ms or {}
            out.append("          " + ", ".join(
                f"{label}: p50 {_fmt(sp[what]['p50'])} ms, p99 {_fmt(sp[what]['p99'])} ms"
                for what, label in (("submit", "submits"), ("event", "event posts")) if what in sp))
            out.append(f"          {r.submits_per_s:,.1f} submits/s, {r.event_posts_per_s:,.1f} "
                       f"event posts/s ({MIXED_EVENT_POSTS} single-line posts a run); read models caught up "
                       f"{_fmt(r.catch_up_s)} s after the window; {chk['runs_checked']} runs read back")
            out.append(f"          lost: {chk['lost_events']} events, {chk['lost_runs']} runs"
                       + (f"; {chk['surplus_runs']} runs with more lines than accepted posts"
                          if chk["surplus_runs"] else "")
                       + ("" if r.nothing_lost else f"  <- first: {chk['first_loss']}"))
        if r.events_per_request:
            cpu_ms = None if r.server_cpu_us is None else r.server_cpu_us / 1000
            out.append(f"          {r.events_per_request} event(s) a request: {r.events_per_s:,.0f} "
                       f"events/s, serve CPU {_fmt(cpu_ms)} ms per request; read models caught up "
                       f"{_fmt(r.catch_up_s)} s after the window")
        if r.first_error:
            out.append(f"          first error: {r.first_error}")
    if ratios:
        out.append("")
        for k, v in ratios.items():
            what, _, c = k.rpartition("_c")
            label = what.replace("_over_", " / ").replace("_cpu", "")
            how = ("ceiling's server CPU per request / ours" if what.endswith("_cpu")
                   else "throughput ratio")
            out.append(f"  {label} ({c} clients) = {v:.2f}   ({how})")
    out.append("  srv us/req = server process CPU per request (robust to other load on the host); "
               "lg us/req = the load generator's;")
    out.append("  conns = PostgreSQL connections held by the Control Room server as the window closed "
               "(ceiling rows: none of ours);")
    out.append("  cores = CPU cores used in the window by:")
    out.append("  the load generator / the server process / the bench database's Postgres backends / "
               "everything else on the host")
    out += ["", f"{'target':<52} {'result':<30} verdict"]
    out += [f"{t['target']:<52} {t['value'] or '-':<30} {verdict(t['ok'])}" for t in targets]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="benchmark this running Control Room instead of starting one")
    p.add_argument("--token", default=os.environ.get("CONTROLROOM_TOKEN"),
                   help="bearer token for --url (env CONTROLROOM_TOKEN)")
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
                   help="Postgres server on which a fresh controlroom_bench_<rand> database is created "
                        f"(default {DEFAULT_DATABASE_URL})")
    p.add_argument("--embedded", action="store_true",
                   help="start the server in embedded mode (its own Postgres, temp data dir)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each scenario")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat all scenarios R times (interleaved); report each scenario's median round")
    p.add_argument("--concurrency", default="1,16", help="client counts, comma separated (default 1,16)")
    p.add_argument("--clients-processes", type=int, default=1, metavar="K",
                   help="spread the clients of a scenario over K load-generator processes")
    p.add_argument("--scenarios", default="submit,get,ceiling",
                   help="comma separated, from submit,get,ceiling,ping,events,mixed (default "
                        "submit,get,ceiling); ping = GET /ping on the ceiling app, no database: uvicorn + "
                        f"Litestar + harness; mixed = submit, then {MIXED_EVENT_POSTS} single-line event "
                        "posts to that run, over and over, every run read back after the window")
    p.add_argument("--events", action="store_true",
                   help="add the events scenarios (same as listing `events` in --scenarios)")
    p.add_argument("--event-batch", default="1,100",
                   help="events per POST in the events scenarios, comma separated (default 1,100)")
    p.add_argument("--client", choices=CLIENTS, default=DEFAULT_CLIENT,
                   help="the load generator's HTTP client, one keep-alive connection per client "
                        f"(default {DEFAULT_CLIENT}: aiohttp when installed, it costs the load generator "
                        "less CPU per request than httpx)")
    p.add_argument("--ceiling-loop", choices=["asyncio", "uvloop"], default="asyncio",
                   help="event loop of the ceiling app (asyncio = what cmd_serve runs)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--keep-logs", action="store_true", help="print where server logs are and keep them")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    scenarios = {x.strip() for x in args.scenarios.split(",") if x.strip()} | (
        {"events"} if args.events else set())
    if scenarios - SCENARIOS:
        sys.exit(f"unknown scenario(s) {sorted(scenarios - SCENARIOS)}; choose from {sorted(SCENARIOS)}")
    if args.url and not args.token:
        sys.exit("--url needs --token (or CONTROLROOM_TOKEN)")
    return run_cleaning_up(lambda stack: run(args, levels, scenarios, stack))


def run(args: argparse.Namespace, levels: list[int], scenarios: set[str], stack: contextlib.ExitStack) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="controlroom-bench-"))
    tmp.chmod(0o755)  # embedded Postgres runs as an unprivileged user when we are root
    stack.callback(lambda: None if args.keep_logs else shutil.rmtree(tmp, ignore_errors=True))
    logs = tmp / "logs"
    logs.mkdir()
    base_env = {k: v for k, v in os.environ.items()
                if k != "DATABASE_URL" and not k.startswith("CONTROLROOM_")}

    # -- a database for the server (and the ceiling table) --------------------------------------
    db_dsn: str | None = None
    if not args.embedded:
        try:
            db_dsn = fresh_database(args.database_url, stack)
        except (OSError, asyncpg.PostgresError) as e:
            if not args.url:
                raise SystemExit(f"cannot create a database on {redact(args.database_url)}: {e}") from e
            print(f"note: no ceiling (cannot create a database on {redact(args.database_url)}: {e})")

    # -- the Control Room server ------------------------------------------------------------------
    server_pids: list[int] = []
    if args.url:
        url, token = args.url.rstrip("/"), args.token
        server_desc = f"{url} (given; not started here, its CPU is not accounted)"
        database_desc = "(the given server's)"
    else:
        data_dir = tmp / "data"
        env = {**base_env, "CONTROLROOM_DATA_DIR": str(data_dir),
               "CONTROLROOM_JWT_SECRET": secrets.token_urlsafe(32)}
        if db_dsn:
            env["DATABASE_URL"] = db_dsn
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = Server("controlroom", [controlroom_exe(), "serve", "--no-worker", "--port", str(port)],
                        env, logs)
        stack.callback(lambda: _stop_embedded_postgres(data_dir) if args.embedded else None)
        stack.callback(server.stop)
        server.wait_ready(f"{url}/readyz", timeout=180 if args.embedded else 60)
        server_pids = [server.pid]
        token = subprocess.run([controlroom_exe(), "token", "--tenant", "bench", "--sub", "bench"],
                               env=env, capture_output=True, text=True, check=True).stdout.strip()
        if args.embedded:
            db_dsn = embedded_dsn(data_dir)
        server_desc = (f"controlroom serve --no-worker --port {port} (started here; --no-worker: jobs are "
                       "queued but not executed, so no worker competes for the CPU)")
        database_desc = (f"{redact(db_dsn or '')} (embedded mode, temp data dir)" if args.embedded
                         else f"{redact(db_dsn or '')} (fresh, dropped at exit)")

    cpus = os.cpu_count() or 0
    busy = host_busy_cores()
    uvloop_desc = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio loop"
    meta: dict[str, Any] = {
        "host_busy_before_cores": busy,
        "host": f"{platform.system()} {platform.machine()}, {cpus} CPUs, Python {platform.python_version()}",
        "cpus": cpus,
        "server": server_desc,
        "database": database_desc,
        "ceiling": "skipped" if not ({"ceiling", "ping"} & scenarios and db_dsn) else (
            f"bench/ceiling_app.py: bare Litestar, ONE asyncpg PK SELECT per request over {CEILING_ROWS} "
            f"rows, same uvicorn settings as cmd_serve (loop: {args.ceiling_loop})"),
        "client": describe(args.client),
        "harness": (f"{args.client} keep-alive ({uvloop_desc}), one client/connection per slot, "
                    f"{args.clients_processes} load process(es) max, warm-up {args.warmup:g} s excluded, "
                    f"{args.duration:g} s measured per scenario, "
                    f"{args.rounds} round(s) (median round shown)"),
        "concurrency": levels,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "clients_processes": args.clients_processes,
        "rounds": args.rounds,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    common = {"url": url, "headers": headers, "processes": args.clients_processes, "client": args.client,
              "warmup": args.warmup, "duration": args.duration,
              "db_dsn": None if args.url else db_dsn}  # a given server's database is not ours to watch

    ccommon: dict[str, Any] | None = None
    ceiling_pids: list[int] = []
    if {"ceiling", "ping"} & scenarios and db_dsn:
        cport = free_port()
        ceiling = Server("ceiling", [sys.executable, str(BENCH_DIR / "ceiling_app.py"), "--dsn", db_dsn,
                                     "--port", str(cport), "--rows", str(CEILING_ROWS),
                                     "--loop", args.ceiling_loop], base_env, logs)
        stack.callback(ceiling.stop)
        curl = f"http://127.0.0.1:{cport}"
        ceiling.wait_ready(f"{curl}/readyz", timeout=60)
        ccommon, ceiling_pids = {**common, "url": curl, "db_dsn": db_dsn}, [ceiling.pid]

    rounds: dict[tuple[str, int], list[Result]] = {}

    def note(r: Result) -> None:
        rounds.setdefault((r.scenario, r.clients), []).append(r)
        print(f"  {r.scenario:<8} c={r.clients:<3} {r.rps:>8.1f} req/s  p50 {_fmt(r.p50_ms)} ms  "
              f"p99 {_fmt(r.p99_ms)} ms  errors {r.errors}  cores {r.cpu_cores}"
              + (f"  {r.events_per_s:,.0f} events/s, caught up after {r.catch_up_s} s"
                 if r.events_per_request else "")
              + (f"  {r.submits_per_s} submits/s, {r.event_posts_per_s} posts/s, caught up after "
                 f"{r.catch_up_s} s, lost {_lost(r)}" if r.check is not None else ""),
              file=sys.stderr, flush=True)

    print(f"benchmarking {url} ({args.duration:g} s per scenario, {args.rounds} round(s)) ...",
          file=sys.stderr, flush=True)
    ids: list[str] = []
    for n in range(args.rounds):
        if args.rounds > 1:
            print(f" round {n + 1}/{args.rounds}", file=sys.stderr, flush=True)
        if "submit" in scenarios:
            for c in levels:
                note(measure(scenario="submit", target=f"POST {SUBMIT_PATH}", kind="submit", clients=c,
                             ids=[], server_pids=server_pids, new_ids=ids, **common))
        if "get" in scenarios:
            if not ids:  # GET alone: create some runs first, unmeasured
                ids = _event_loop_run(seed_runs(url, headers, SEED_RUNS))
            if ids:
                for c in levels:
                    note(measure(scenario="get", target=f"GET {API}/runs/{{id}}", kind="get", clients=c,
                                 ids=ids, server_pids=server_pids, **common))
            else:
                print("no run was created: skipping the GET scenarios", file=sys.stderr)
        if "events" in scenarios:
            for b in (int(x) for x in args.event_batch.split(",") if x.strip()):
                for c in levels:
                    r = measure(scenario=f"events{b}", target=f"POST {API}/runs/{{id}}/events",
                                kind=f"events{b}", clients=c, ids=[], server_pids=server_pids,
                                **common)
                    # Posts don't wait for the read models; the next scenario must not pay
                    # for their backlog (a submission waits for it).
                    r.catch_up_s = _event_loop_run(catch_up(url, headers))
                    note(r)
        if "mixed" in scenarios:
            for c in levels:
                note(measure(scenario="mixed", target=f"submit + {MIXED_EVENT_POSTS} event POSTs",
                             kind="mixed", clients=c, ids=[], server_pids=server_pids, **common))
        if ccommon:
            for kind, target in (("ceiling", "GET /rows/{id} (bare)"), ("ping", "GET /ping (no db)")):
                if kind in scenarios:
                    for c in levels:
                        note(measure(scenario=kind, target=target, kind=kind, clients=c, ids=[],
                                     server_pids=ceiling_pids, **ccommon))
    results = [median_round(rs) for rs in rounds.values()]

    ratios, targets = evaluate(results, levels)
    print()
    print(render(meta, results, ratios, targets))
    if args.keep_logs:
        print(f"\nserver logs kept in {logs}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"meta": meta, "results": [{**asdict(r), "server_cpu_us": r.server_cpu_us,
                                        "loadgen_cpu_us": r.loadgen_cpu_us, "events_per_s": r.events_per_s,
                                        "nothing_lost": r.nothing_lost} for r in results],
             "ratios": ratios, "targets": targets},
            indent=2))
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
