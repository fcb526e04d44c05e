"""Fault injection: real Control Room processes, a database, Redis and webhook receivers that
fail on purpose, and counts of what was lost, duplicated or stuck afterwards.

    python bench/faults.py                          # every scenario
    python bench/faults.py --quick                  # shorter outages, fewer runs: a few minutes
    python bench/faults.py --scenario db-outage --long
    python bench/faults.py --scenario worker-kill --scenario api-kill --json /tmp/faults.json

Everything runs on a PostgreSQL 15 cluster of the bench's own (Debian's binaries, initdb into a
temporary dir, run as `nobody` when we are root), one fresh database per scenario, and on a
Redis database number of its own (`--redis-db`, emptied with FLUSHDB; the bench refuses a
database holding anyone else's keys). Job processes are real: each prints numbered lines and
`::progress` steps, and tells a collector socket of the bench what it actually did (`start`,
each line, `done` just before exiting 0): the ground truth the recorded log is held against.
A sampler reads the host's process table every 100 ms and finds each job process by the
`CONTROLROOM_RUN_ID` / `CONTROLROOM_ATTEMPT` in its environment (the sandbox launcher itself
has an empty one), so two live attempts of one run are seen whoever started them.

Scenarios:
  db-outage       serve --no-worker + worker --processes 2 --threads 2; half the jobs end during
                  the outage, half run past it; the cluster is stopped (fast shutdown) for 30 s
                  (--long: 60 s, past the 50 s a lease is certainly held; --quick: 10 s)
  worker-kill     60 runs in flight on 2 x 2 worker slots; a worker process running jobs is
                  SIGKILLed three times (lease timeout 10 s so the reaper acts within ~25 s)
  api-kill        1,000 submits with Idempotency-Key from 4 client threads, retried on any
                  error; the API is SIGKILLed twice and restarted
  redis-flush     runs queued in Redis behind busy workers; FLUSHDB; the reaper re-sends them
  projector-kill  serve --no-projections + controlroom projector + workers; the projector is
                  SIGKILLed twice while runs are submitted, restarted 8 s later each time
  webhook-hang    runs completed through the inbound hook, 1 in 10 calling back a receiver that
                  sleeps 30 s per request, the others a fast receiver

Counted for every scenario (the columns of the final table):
  lost        runs (or idempotency keys) accepted but absent, or completed without their job
              having run
  dup         runs ended more than once, attempts started or ended twice, a key answered with
              two runs, callbacks delivered twice
  stuck       runs not terminal by the deadline
  wrong       attempts whose job finished (told the collector `done`) but were recorded failed
              (e.g. `worker_lost`); counted against zero in db-outage, shown for information
              elsewhere (a SIGKILLed worker takes an outcome it had not recorded with it)
  lines -/+   log lines and progress steps of a completed run's final attempt missing, and any
              line or step recorded twice
  alive       the most attempts of one run seen alive at the same instant (must be <= 1)
  recovery    the scenario's recovery time (named in its detail line)
Exit 1 if any count that should be zero is not (or a scenario could not run).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import re
import secrets
import signal
import socketserver
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from api import Server, controlroom_exe, free_port, host_busy_cores, percentile, run_cleaning_up, temp_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.pg15_cluster import MISSING, Cluster, available  # noqa: E402

API = "/api/v1"
SCENARIOS = ("db-outage", "worker-kill", "api-kill", "redis-flush", "projector-kill", "webhook-hang")
READY_TIMEOUT_S = 90.0
PROJECTOR_DOWN_S = 8.0
"""Longer than a submit waits for its run to be visible (5 s): some are answered `visible: false`."""
STEP_S = 0.5
"""Seconds between a job's lines."""
STATUS_TOPICS = ("RunSubmitted", "RunStarted", "RunCompleted", "RunFailed", "RunRetryScheduled",
                 "RunCancelled")
JOB_TEMPLATE = """\
import os, socket, time
run, attempt = os.environ["CONTROLROOM_RUN_ID"], os.environ["CONTROLROOM_ATTEMPT"]
tell = socket.create_connection(("127.0.0.1", @PORT@))
def say(what):
    tell.sendall(f"{run} {attempt} {what}\\n".encode())
say("start")
for i in range(@LINES@):
    print(f"line {i} attempt {attempt}", flush=True)
    print(f"::progress {(i + 1) * 100 / @LINES@:.1f} step {i} attempt {attempt}", flush=True)
    say(f"line {i}")
    time.sleep(@STEP@)
say("done")
"""
LINE = re.compile(r"line (\d+) attempt (\d+)")
STEP = re.compile(r"step (\d+) attempt (\d+)")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_for(check: Callable[[], Any], timeout: float, what: str, poll: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


# --------------------------------------------------------------------------- ground truth


class Collector:
    """A TCP socket jobs tell what they did: `<run> <attempt> start|line N|done` per line."""

    def __init__(self) -> None:
        self.records: list[tuple[float, str, int, str]] = []
        lock = threading.Lock()
        records = self.records

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for raw in self.rfile:
                    run, attempt, what = raw.decode().rstrip("\n").split(" ", 2)
                    with lock:
                        records.append((time.monotonic(), run, int(attempt), what))

        socketserver.ThreadingTCPServer.daemon_threads = True
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def started(self, run_ids: set[str]) -> set[str]:
        return {r for _, r, _, w in list(self.records) if w == "start" and r in run_ids}

    def done(self) -> dict[str, set[int]]:
        """Run -> the attempts whose job got to the end."""
        out: dict[str, set[int]] = defaultdict(set)
        for _, run, attempt, what in list(self.records):
            if what == "done":
                out[run].add(attempt)
        return out


class Sampler:
    """Every 100 ms: which attempts of which runs have a live (non-zombie) process on the host."""

    def __init__(self) -> None:
        self.max_alive: dict[str, int] = defaultdict(int)
        self.overlaps: list[tuple[float, str, list[int]]] = []
        self.seen: dict[tuple[str, int], list[float]] = {}
        self.pids: dict[str, set[int]] = defaultdict(set)
        self.samples = 0
        self._known: dict[tuple[int, str], tuple[str, int] | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _identify(self, pid: str, start: str) -> tuple[str, int] | None:
        """The (run, attempt) a process runs for, from its environment; cached once it is sure."""
        key = (int(pid), start)
        if key in self._known:
            return self._known[key]
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return None
        env = dict(e.split(b"=", 1) for e in environ if b"=" in e)
        run, attempt = env.get(b"CONTROLROOM_RUN_ID"), env.get(b"CONTROLROOM_ATTEMPT")
        found = (run.decode(), int(attempt)) if run and attempt and attempt.isdigit() else None
        with contextlib.suppress(OSError, ValueError):
            uptime = float(Path("/proc/uptime").read_text().split()[0])
            # a young process may still exec into a job (the launcher forks, then execs)
            if found is not None or uptime - int(start) / self._ticks > 2.0:
                self._known[key] = found
        return found

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            live: dict[str, set[int]] = defaultdict(set)
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                if fields[0] in ("Z", "X"):
                    continue  # dead, only not yet collected
                found = self._identify(pid, fields[19])
                if found is not None:
                    live[found[0]].add(found[1])
                    self.pids[found[0]].add(int(pid))
            now = time.monotonic()
            self.samples += 1
            for run, attempts in live.items():
                self.max_alive[run] = max(self.max_alive[run], len(attempts))
                if len(attempts) > 1:
                    self.overlaps.append((now, run, sorted(attempts)))
                for a in attempts:
                    self.seen.setdefault((run, a), [now, now])[1] = now

    def alive_now(self, run_ids: set[str]) -> set[str]:
        """Runs of `run_ids` with a process seen in the last half second."""
        now = time.monotonic()
        return {r for (r, _), (_, last) in list(self.seen.items()) if r in run_ids and now - last < 0.5}

    def kill_leftovers(self, run_ids: set[str]) -> None:
        """SIGKILL what is left of our runs' jobs (their process groups)."""
        for run in run_ids:
            for pid in self.pids.get(run, ()):
                with contextlib.suppress(OSError):
                    environ = Path(f"/proc/{pid}/environ").read_bytes()
                    if f"CONTROLROOM_RUN_ID={run}".encode() in environ.split(b"\0"):
                        os.killpg(os.getpgid(pid), signal.SIGKILL)


# --------------------------------------------------------------------------- the log


@dataclass
class Attempt:
    starts: int = 0
    outcomes: list[str] = field(default_factory=list)
    lines: Counter[int] = field(default_factory=Counter)
    steps: Counter[int] = field(default_factory=Counter)
    outcome_at: list[float] = field(default_factory=list)
    """When each outcome was recorded (epoch seconds, the recording process's clock)."""


@dataclass
class RunLog:
    status: str = "absent"
    terminal_events: int = 0
    events: int = 0
    log_lines: int = 0
    attempts: dict[int, Attempt] = field(default_factory=lambda: defaultdict(Attempt))
    attempt: int = 1


def _event_name(topic: str) -> str:
    return topic.rsplit(".", 1)[-1]


def read_log(dsn: str, run_ids: list[str]) -> dict[str, RunLog]:
    """Each run as its events in the log say: status, attempts, outcomes, lines, steps."""
    runs: dict[str, RunLog] = {r: RunLog() for r in run_ids}
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT originator_id::text, topic, state FROM controlroom_events "
            "WHERE originator_id = ANY(%s::uuid[]) ORDER BY originator_id, originator_version",
            (run_ids,)).fetchall()
    for run_id, topic, state in rows:
        run, name = runs[run_id], _event_name(topic)
        data = json.loads(bytes(state))
        run.events += 1
        if name == "RunSubmitted":
            run.status = "queued"
        elif name == "RunStarted":
            run.attempt = int(data["attempt"])
            run.attempts[run.attempt].starts += 1
            run.status = "running"
        elif name == "RunLogged":
            for text in data["text"].splitlines():
                run.log_lines += 1
                if m := LINE.fullmatch(text):
                    run.attempts[int(m[2])].lines[int(m[1])] += 1
        elif name == "RunProgressed" and (m := STEP.search(data.get("message") or "")):
            run.attempts[int(m[2])].steps[int(m[1])] += 1
        if name in ("RunCompleted", "RunFailed", "RunCancelled"):
            run.attempts[run.attempt].outcome_at.append(_epoch(data.get("at")))
        if name == "RunCompleted":
            run.attempts[run.attempt].outcomes.append("completed")
            run.status, run.terminal_events = "completed", run.terminal_events + 1
        elif name == "RunFailed":
            run.attempts[run.attempt].outcomes.append(f"failed:{data.get('reason')}")
            run.status = "failed"
            if not data.get("retrying"):
                run.terminal_events += 1
        elif name == "RunRetryScheduled":
            run.status, run.attempt = "queued", int(data["attempt"])
        elif name == "RunCancelled":
            run.attempts[run.attempt].outcomes.append("cancelled")
            run.status, run.terminal_events = "cancelled", run.terminal_events + 1
    return runs


def _epoch(value: Any) -> float:
    """A datetime as the event store encodes it, in epoch seconds (nan if absent)."""
    if isinstance(value, dict) and "_data_" in value:
        return datetime.fromisoformat(value["_data_"]).timestamp()
    return float("nan")


def terminal(run: RunLog) -> bool:
    return run.terminal_events > 0


def wait_terminal(dsn: str, run_ids: list[str], timeout: float,
                  deaths: Callable[[], list[str]] = list) -> tuple[float | None, dict[str, RunLog]]:
    """Poll the log until every run is terminal: (seconds it took or None, the runs). Gives up
    early (after a last 30 s) once `deaths()` names a process that died on its own."""
    t0, deadline = time.monotonic(), time.monotonic() + timeout
    died = False
    runs: dict[str, RunLog] = {}
    while True:
        with contextlib.suppress(psycopg.Error):
            runs = read_log(dsn, run_ids)
            if all(terminal(r) for r in runs.values()):
                return time.monotonic() - t0, runs
        if time.monotonic() > deadline:
            return None, runs
        if not died and deaths():
            died, deadline = True, min(deadline, time.monotonic() + 30)
        time.sleep(0.5)


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    scenario: str
    runs: int = 0
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0
    wrong: int = 0
    wrong_counts: bool = False
    lines_missing: int = 0
    lines_duplicated: int = 0
    max_alive: int | None = None
    recovery_s: float | None = None
    recovery_what: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def bad(self) -> list[str]:
        """Counts that should be zero and are not."""
        out = [f"{k}={getattr(self, k)}" for k in ("lost", "duplicated", "stuck", "lines_missing",
                                                     "lines_duplicated") if getattr(self, k)]
        if self.wrong and self.wrong_counts:
            out.append(f"wrong={self.wrong}")
        if self.max_alive is not None and self.max_alive > 1:
            out.append(f"max_alive={self.max_alive}")
        if self.error:
            out.append("error")
        return out


def judge_jobs(res: Result, runs: dict[str, RunLog], lines: dict[str, int], collector: Collector,
               sampler: Sampler) -> None:
    """Fill the job counts of `res` from the log, the collector's truth and the sampler."""
    done = collector.done()
    failed: Counter[str] = Counter()
    wrong_detail: list[str] = []
    reexecuted = 0
    for run_id, run in runs.items():
        res.runs += 1
        if run.status == "absent":
            res.lost += 1
            continue
        if not terminal(run):
            res.stuck += 1
        res.duplicated += max(0, run.terminal_events - 1)
        for n, attempt in run.attempts.items():
            res.duplicated += max(0, attempt.starts - 1) + max(0, len(attempt.outcomes) - 1)
            finished = n in done.get(run_id, set())
            if finished and attempt.outcomes and attempt.outcomes[0] != "completed":
                res.wrong += 1
                wrong_detail.append(f"{run_id[:8]} attempt {n}: finished, recorded {attempt.outcomes[0]}")
            if not finished and "completed" in attempt.outcomes:
                res.lost += 1  # completed, yet its job never got to the end
            res.lines_duplicated += sum(c - 1 for c in attempt.lines.values() if c > 1)
            res.lines_duplicated += sum(c - 1 for c in attempt.steps.values() if c > 1)
            for outcome in attempt.outcomes:
                if outcome != "completed":
                    failed[outcome] += 1
        if len(done.get(run_id, set())) > 1:
            reexecuted += 1
        if run.status == "completed":
            final = run.attempts[run.attempt]
            res.lines_missing += sum(1 for i in range(lines[run_id]) if i not in final.lines)
            res.lines_missing += sum(1 for i in range(lines[run_id]) if i not in final.steps)
    res.max_alive = max((sampler.max_alive.get(r, 0) for r in runs), default=0)
    res.details.update({
        "final statuses": dict(Counter(r.status for r in runs.values())),
        "failed attempts by reason": dict(failed),
        "jobs run to the end more than once": reexecuted,
        "process samples": sampler.samples,
    })
    if wrong_detail:
        res.details["wrong outcomes"] = wrong_detail[:10]
    told: Counter[tuple[str, int]] = Counter((r, a) for _, r, a, what in list(collector.records)
                                             if what.startswith("line "))
    history = []
    for run_id, run in runs.items():
        if len(run.attempts) > 1 or any(not a.outcomes or a.outcomes[0] != "completed"
                                        for a in run.attempts.values()):
            steps = [f"a{n} {(a.outcomes or ['-'])[0]} after {told[(run_id, n)]}/{lines[run_id]} lines"
                     for n, a in sorted(run.attempts.items())]
            history.append(f"{run_id[:8]}: " + ", ".join(steps))
    if history:
        res.details["runs not done in one attempt (lines the job printed)"] = history[:12]
    overlaps = [o for o in sampler.overlaps if o[1] in runs]
    if overlaps:
        res.details["two attempts alive at once"] = [f"{r[:8]} {a}" for _, r, a in overlaps[:5]]


# --------------------------------------------------------------------------- a deployment


class Deployment:
    """One scenario's processes on a fresh database of the bench's cluster, and its clients."""

    def __init__(self, bench: Bench, name: str, stack: contextlib.ExitStack, *, redis_on: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.bench, self.name = bench, name
        self.tmp = temp_dir(stack, f"controlroom-faults-{name}-")
        dbname = f"faults_{name.replace('-', '_')}_{secrets.token_hex(3)}"
        with psycopg.connect(bench.cluster.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        self.dsn = bench.cluster.dsn.rsplit("/", 1)[0] + f"/{dbname}"
        self.port, self.jwt_secret = free_port(), secrets.token_hex(32)
        self.url = f"http://127.0.0.1:{self.port}"
        self.namespace = f"controlroom-faults-{secrets.token_hex(4)}"
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("CONTROLROOM_", "PG")) and k not in ("REDIS_URL", "DATABASE_URL")}
        self.env = base | {
            "DATABASE_URL": self.dsn, "CONTROLROOM_DATA_DIR": str(self.tmp / "data"),
            "CONTROLROOM_PORT": str(self.port), "CONTROLROOM_JWT_SECRET": self.jwt_secret,
            "CONTROLROOM_SECRET_KEY": secrets.token_hex(32), "PYTHONUNBUFFERED": "1",
        } | (env or {})
        if redis_on:
            self.env |= {"REDIS_URL": bench.redis_url, "CONTROLROOM_REDIS_NAMESPACE": self.namespace}
        self.servers: list[Server] = []
        self.collector = Collector()
        self.sampler = Sampler()
        self.run_ids: list[str] = []
        self.invisible = 0
        bench.deployment = self

        from controlroom.api.auth import ALL_SCOPES, issue_token

        token = issue_token(self.jwt_secret, tenant="faults", sub="bench", scopes=ALL_SCOPES, ttl_s=7200)
        self.headers = {"Authorization": f"Bearer {token}"}
        stack.callback(self.close)

    def close(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.sampler.kill_leftovers(set(self.run_ids))
        self.sampler.close()
        self.collector.close()
        if self.bench.cluster_up:
            with contextlib.suppress(psycopg.Error), \
                    psycopg.connect(self.bench.cluster.dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
        self.bench.flush_redis()

    def deaths(self) -> list[str]:
        """Servers that exited without the bench stopping them, with the end of their output."""
        out = []
        for server in self.servers:
            if server.proc.poll() is not None:
                tail = server.log_tail(3).replace("\n", " | ")[-300:]
                out.append(f"{server.name} (pid {server.pid}) exited with {server.proc.returncode}: {tail}")
        return out

    def start(self, label: str, *argv: str) -> Server:
        server = Server(f"{label}-{len(self.servers)}", [controlroom_exe(), *argv], self.env, self.tmp)
        self.servers.append(server)
        return server

    def kill9(self, server: Server) -> None:
        """SIGKILL a server we started and forget it (its pid may be reused afterwards)."""
        os.kill(server.pid, signal.SIGKILL)
        server.stop()
        self.servers.remove(server)

    def start_api(self, *flags: str) -> Server:
        api = self.start("api", "serve", "--no-worker", *flags)
        api.wait_ready(f"{self.url}/readyz", READY_TIMEOUT_S)
        return api

    def start_workers(self, processes: int = 2, threads: int = 2) -> Server:
        workers = self.start("workers", "worker", "--processes", str(processes), "--threads", str(threads))
        client = self.bench.redis()
        wait_for(lambda: client.zcard(f"{self.namespace}:__heartbeats__") >= processes
                 or workers.proc.poll() is not None, READY_TIMEOUT_S, "the worker processes")
        if workers.proc.poll() is not None:
            raise RuntimeError(f"worker exited {workers.proc.returncode}:\n{workers.log_tail()}")
        return workers

    def job(self, lines: int) -> dict[str, Any]:
        source = (JOB_TEMPLATE.replace("@PORT@", str(self.collector.port))
                  .replace("@LINES@", str(lines)).replace("@STEP@", repr(STEP_S)))
        return {"job_type": "spark_etl", "code": {"files": [{"path": "main.py", "content": source}]},
                "spec": {"description": "fault-injection bench job", "job_name": f"faults-{self.name}"},
                "max_retries": 3, "timeout_s": 900}

    def submit(self, http: httpx.Client, body: dict[str, Any], key: str | None = None,
               patience_s: float = 60.0) -> str:
        """Submit, retrying refusals and broken connections; the run id."""
        headers = {"Idempotency-Key": key} if key else {}
        deadline = time.monotonic() + patience_s
        while True:
            try:
                r = http.post(f"{self.url}{API}/jobs/run", json=body, headers=headers)
                if r.status_code == 202:
                    run_id: str = r.json()["run_id"]
                    self.run_ids.append(run_id)
                    self.invisible += r.json().get("visible") is False
                    return run_id
                problem = f"HTTP {r.status_code}: {r.text[:200]}"
            except httpx.HTTPError as e:
                problem = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"submit kept failing: {problem}")
            time.sleep(0.2)

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(headers=self.headers, timeout=timeout)

    def running_worker_pids(self, workers: Server) -> Counter[int]:
        """Worker processes (children of `workers`) by how many live job processes descend from them."""
        children = {int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == workers.pid}
        counts: Counter[int] = Counter({pid: 0 for pid in children})
        for run in self.sampler.alive_now(set(self.run_ids)):
            for pid in list(self.sampler.pids.get(run, ())):
                ancestor: int | None = pid
                for _ in range(8):  # job <- sandbox PID 1 <- launcher <- worker process
                    ancestor = _ppid(ancestor) if ancestor else None
                    if ancestor in children:
                        counts[ancestor] += 1
                        break
        return counts


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------- scenarios


def scenario_db_outage(bench: Bench, stack: contextlib.ExitStack) -> Result:
    outage = 10.0 if bench.args.quick else 60.0 if bench.args.long else 30.0
    name = "db-outage-long" if bench.args.long else "db-outage"
    res = Result(name, wrong_counts=True, recovery_what="database back -> every run terminal")
    d = Deployment(bench, name, stack)
    d.start_api()
    d.start_workers()
    n = 4 if bench.args.quick else 8
    short_s, long_s = outage / 2 + 3, outage + 20  # half end during the outage, half after it
    lines = {}
    with d.client() as http:
        for i in range(n):
            count = int((short_s if i % 2 == 0 else long_s) / STEP_S)
            lines[d.submit(http, d.job(count))] = count
    ids = list(lines)
    slots = min(n, 4)
    wait_for(lambda: len(d.collector.started(set(ids))) >= slots, 60, f"{slots} jobs to start")
    time.sleep(3.0)
    running = d.sampler.alive_now(set(ids))
    log(f"{name}: {len(running)} jobs running; stopping the database for {outage:.0f} s")
    bench.stop_cluster()
    down_at = time.monotonic()
    time.sleep(outage)
    survived = d.sampler.alive_now(set(ids)) & running
    bench.start_cluster()
    back_at, back_wall = time.monotonic(), time.time()
    log(f"{name}: database back after {back_at - down_at:.1f} s")
    api = d.servers[0]
    ready_s = None
    with contextlib.suppress(RuntimeError):
        api.wait_ready(f"{d.url}/readyz", 120)
        ready_s = time.monotonic() - back_at
    took, runs = wait_terminal(d.dsn, ids, 60 + 300 + 2 * long_s, d.deaths)
    res.recovery_s = None if took is None else time.monotonic() - back_at
    judge_jobs(res, runs, lines, d.collector, d.sampler)
    # jobs that got to the end while the database was away: when was their outcome recorded?
    ended_during = [(r, a) for at, r, a, what in list(d.collector.records)
                    if what == "done" and r in runs and down_at <= at < back_at]
    recorded = sorted(at - back_wall for r, a in ended_during
                      for at in runs[r].attempts[a].outcome_at[:1] if at == at)
    res.details.update({
        "jobs that ended during the outage": len(ended_during),
        "  their outcome recorded after the database was back (max)":
            f"{len(recorded)} ({_secs(recorded[-1]) if recorded else '-'})",
        "outage": f"{back_at - down_at:.1f} s",
        "jobs": f"{n} ({n // 2} of {short_s:.0f} s, {n // 2} of {long_s:.0f} s), {len(running)} running "
                f"when it began, {len(survived)} of them still alive at its end",
        "database back -> /readyz 200": None if ready_s is None else f"{ready_s:.1f} s",
        "workers": "2 processes x 2 threads, lease timeout 60 s (default)",
    })
    return res


def scenario_worker_kill(bench: Bench, stack: contextlib.ExitStack) -> Result:
    res = Result("worker-kill", recovery_what="last kill -> every run terminal")
    lease = 10.0
    d = Deployment(bench, "worker-kill", stack, env={"CONTROLROOM_LEASE_TIMEOUT_S": str(lease)})
    d.start_api()
    workers = d.start_workers()
    n, job_lines = (20, 6) if bench.args.quick else (60, 8)
    lines = {}
    with d.client() as http:
        for _ in range(n):
            lines[d.submit(http, d.job(job_lines))] = job_lines
    ids = list(lines)
    kills = []
    for k in range(3):
        time.sleep(4.0 if bench.args.quick else 8.0)
        pid, running = wait_for(lambda: next((v for v in d.running_worker_pids(workers).most_common(1)
                                              if v[1] > 0), None), 30, "a worker process running jobs", 0.1)
        log(f"worker-kill: kill -9 worker process {pid} ({running} jobs running) [{k + 1}/3]")
        os.kill(pid, signal.SIGKILL)
        kills.append(running)
    last_kill = time.monotonic()
    took, runs = wait_terminal(d.dsn, ids, 300, d.deaths)
    res.recovery_s = None if took is None else time.monotonic() - last_kill
    judge_jobs(res, runs, lines, d.collector, d.sampler)
    res.details.update({"runs": f"{n} submitted at once, {job_lines * STEP_S:.0f} s each, 2 x 2 slots",
                        "jobs running in the killed processes": kills,
                        "lease timeout": f"{lease:.0f} s (reaper grace {lease:.0f} s)"})
    return res


def scenario_api_kill(bench: Bench, stack: contextlib.ExitStack) -> Result:
    res = Result("api-kill", recovery_what="kill -9 -> /readyz 200 again (slowest of 2)")
    d = Deployment(bench, "api-kill", stack, redis_on=False)
    api = d.start_api()
    n, clients = (200, 4) if bench.args.quick else (1000, 4)
    keys = [f"faults-{secrets.token_hex(4)}-{i}" for i in range(n)]
    answers: dict[str, set[str]] = defaultdict(set)
    problems: Counter[str] = Counter()
    conflicts: list[str] = []
    accepted = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def client(part: list[str]) -> None:
        with httpx.Client(headers=d.headers, timeout=10) as http:
            for key in part:
                body = {"job_type": "spark_etl",
                        "spec": {"description": "keyed submit", "job_name": "faults-keys"},
                        "code": {"files": [{"path": "main.py", "content": "print('never run')\n"}]},
                        "labels": {"key": key[-40:].replace("-", "_")}}
                while not stop.is_set():
                    try:
                        r = http.post(f"{d.url}{API}/jobs/run", json=body, headers={"Idempotency-Key": key})
                    except httpx.HTTPError as e:
                        with lock:
                            problems[type(e).__name__] += 1
                        time.sleep(0.1)
                        continue
                    if r.status_code == 202:
                        with lock:
                            answers[key].add(r.json()["run_id"])
                            accepted[0] += 1
                        break
                    with lock:
                        problems[f"HTTP {r.status_code}"] += 1
                    if r.status_code == 409:
                        conflicts.append(key)
                        break
                    time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(keys[i::clients],), daemon=True) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    recoveries = []
    for k in (1, 2):
        wait_for(lambda k=k: accepted[0] >= n * k // 3, 300, f"{k}/3 of the submits")
        log(f"api-kill: kill -9 the API after {accepted[0]} accepted submits")
        killed = time.monotonic()
        d.kill9(api)
        api = d.start_api()
        recoveries.append(time.monotonic() - killed)
    for t in threads:
        t.join(600)
    stop.set()
    elapsed = time.monotonic() - t0
    with psycopg.connect(d.dsn) as conn:
        rows = conn.execute("SELECT originator_id::text, state FROM controlroom_events "
                            "WHERE topic LIKE '%.RunSubmitted'").fetchall()
        by_key: dict[str, set[str]] = defaultdict(set)
        for run_id, state in rows:
            by_key[json.loads(bytes(state)).get("idempotency_key")].add(run_id)

        def visible() -> int:
            return int(conn.execute("SELECT count(*) FROM run_status WHERE run_id = ANY(%s::uuid[])",
                                    ([r for rs in by_key.values() for r in rs],)).fetchone()[0])
        with contextlib.suppress(RuntimeError):
            wait_for(lambda: visible() >= len(rows), 60, "the read model")
        shown = visible()
    res.runs = n
    for key in keys:
        in_log = by_key.get(key, set())
        res.lost += not in_log or not answers.get(key)
        res.duplicated += max(0, len(in_log) - 1) + max(0, len(answers.get(key, set())) - 1)
        res.duplicated += bool(in_log and answers.get(key) and answers[key] != in_log)
    res.lost += len(conflicts) + max(0, len(rows) - shown)
    res.duplicated += len(set(by_key) - set(keys))  # runs nobody asked for
    res.recovery_s = max(recoveries)
    res.details.update({
        "submits": f"{n} keys from {clients} threads in {elapsed:.1f} s, {accepted[0]} answered 202",
        "kill -9 -> ready": [f"{r:.1f} s" for r in recoveries],
        "errors retried": dict(problems), "409 conflicts": len(conflicts),
        "runs in the log / in the read model": f"{len(rows)} / {shown}",
    })
    return res


def scenario_redis_flush(bench: Bench, stack: contextlib.ExitStack) -> Result:
    res = Result("redis-flush", recovery_what="FLUSHDB -> every run terminal")
    lease = 10.0
    d = Deployment(bench, "redis-flush", stack, env={"CONTROLROOM_LEASE_TIMEOUT_S": str(lease)})
    d.start_api()
    d.start_workers()
    n, job_lines = (16, 4) if bench.args.quick else (40, 4)
    lines = {}
    with d.client() as http:
        for _ in range(n):
            lines[d.submit(http, d.job(job_lines))] = job_lines
    ids = list(lines)
    client = bench.redis()
    queue = f"{d.namespace}:runs"
    wait_for(lambda: len(d.collector.started(set(ids))) >= 4, 60, "the first jobs to start")
    queued = int(client.llen(queue))
    keys = client.dbsize()
    client.flushdb()
    flushed = time.monotonic()
    log(f"redis-flush: FLUSHDB with {queued} messages queued ({keys} keys)")
    took, runs = wait_terminal(d.dsn, ids, 300, d.deaths)
    res.recovery_s = None if took is None else time.monotonic() - flushed
    judge_jobs(res, runs, lines, d.collector, d.sampler)
    res.details.update({"runs": f"{n} of {job_lines * STEP_S:.0f} s on 2 x 2 slots",
                        "flushed": f"{queued} queued messages, {keys} keys",
                        "lease timeout": f"{lease:.0f} s (queued runs re-sent after one)"})
    return res


def scenario_projector_kill(bench: Bench, stack: contextlib.ExitStack) -> Result:
    res = Result("projector-kill",
                 recovery_what="projector restart -> read models at the log head (slowest of 2)")
    lease = 10.0
    d = Deployment(bench, "projector-kill", stack, env={"CONTROLROOM_LEASE_TIMEOUT_S": str(lease)})
    d.start_api("--no-projections")
    projector = d.start("projector", "projector")
    d.start_workers()
    n, window, job_lines = (40, 24.0, 2) if bench.args.quick else (120, 40.0, 2)
    lines: dict[str, int] = {}
    errors: list[str] = []

    def submitter(count: int, offset: float) -> None:
        try:
            with d.client() as http:
                start = time.monotonic()
                for i in range(count):
                    time.sleep(max(0.0, start + offset + window * i / count - time.monotonic()))
                    lines[d.submit(http, d.job(job_lines))] = job_lines
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=submitter, args=(n // 4, window * k / n), daemon=True)
               for k in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    def positions() -> tuple[int, int]:
        """(the log's head among run events, the least position of run_status and run_events)."""
        with psycopg.connect(d.dsn) as conn:
            head = conn.execute("SELECT coalesce(max(notification_id), 0) FROM controlroom_events "
                                "WHERE topic LIKE 'controlroom.domain.runs.run:Run.%'").fetchone()[0]
            at = [conn.execute(f"SELECT coalesce(max(notification_id), 0) FROM {p}_tracking").fetchone()[0]
                  for p in ("run_status", "run_events")]
        return int(head), int(min(at))

    catch_up: list[float | None] = []
    behind: list[int] = []
    for k, at in enumerate((0.25, 0.6)):
        time.sleep(max(0.0, t0 + window * at - time.monotonic()))
        log(f"projector-kill: kill -9 the projector ({len(lines)} runs submitted) [{k + 1}/2]")
        d.kill9(projector)
        time.sleep(PROJECTOR_DOWN_S)
        head, position = positions()
        behind.append(head - position)
        projector = d.start("projector", "projector")
        restarted = time.monotonic()
        try:  # restart -> the read models have every run event there was when it restarted
            wait_for(lambda head=head: positions()[1] >= head, 120, "the read models to catch up", 0.1)
            catch_up.append(time.monotonic() - restarted)
        except RuntimeError:
            catch_up.append(None)
    for t in threads:
        t.join(300)
    if errors:
        raise RuntimeError(f"submits failed: {errors[:3]}")
    ids = list(lines)
    res.recovery_s = None if None in catch_up else max(c for c in catch_up if c is not None)
    took, runs = wait_terminal(d.dsn, ids, 300, d.deaths)
    judge_jobs(res, runs, lines, d.collector, d.sampler)
    # the read models against the log, once the projections have had the last events
    mismatched: dict[str, int] = {}

    def compare() -> dict[str, int]:
        with psycopg.connect(d.dsn) as conn:
            status = dict(conn.execute("SELECT run_id::text, status FROM run_status "
                                       "WHERE run_id = ANY(%s::uuid[])", (ids,)).fetchall())
            events = dict(conn.execute("SELECT run_id::text, count(*) FROM run_events "
                                       "WHERE run_id = ANY(%s::uuid[]) GROUP BY 1", (ids,)).fetchall())
            chunks = dict(conn.execute("SELECT run_id::text, sum(lines) FROM run_log_chunks "
                                       "WHERE run_id = ANY(%s::uuid[]) GROUP BY 1", (ids,)).fetchall())
        out = {"runs missing from run_status": sum(r not in status for r in ids),
               "run_status disagreeing with the log":
                   sum(r in status and status[r] != runs[r].status for r in ids),
               "events missing from run_events": sum(max(0, runs[r].events - events.get(r, 0)) for r in ids),
               "events extra in run_events": sum(max(0, events.get(r, 0) - runs[r].events) for r in ids),
               "log lines missing from run_log_chunks":
                   sum(max(0, runs[r].log_lines - int(chunks.get(r) or 0)) for r in ids)}
        mismatched.update(out)
        return out

    with contextlib.suppress(RuntimeError):
        wait_for(lambda: not any(compare().values()), 60, "the read models to agree with the log")
    res.lost += sum(v for k, v in mismatched.items() if "missing" in k or "disagreeing" in k)
    res.duplicated += mismatched.get("events extra in run_events", 0)
    res.details.update({"submits": f"{len(ids)} over {window:.0f} s from 4 threads, "
                                   f"{job_lines * STEP_S:.0f} s jobs",
                        "read models vs log": mismatched,
                        "restart -> read models at the log head": [_secs(c) for c in catch_up],
                        "run events behind when restarted": behind,
                        "submits answered before their run was visible": d.invisible,
                        "all terminal": "yes" if took is not None else "no"})
    return res


def receiver_main(port: int, secret: str, hang_s: float, ready: Any) -> None:
    """A webhook receiver process: records each request; sleeps `hang_s` before answering."""
    from standardwebhooks.webhooks import Webhook

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    hook = Webhook(secret)
    records: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            at = time.time()
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                hook.verify(body, headers, json_parse=False)
                verified = True
            except Exception:
                verified = False
            data = json.loads(body)["data"]
            records.append({"webhook_id": headers.get("webhook-id", ""), "run_id": data["run_id"],
                            "at": at, "completed_at": data.get("completed_at"), "verified": verified})
            time.sleep(hang_s)
            self._answer(200, b"")

        def do_GET(self) -> None:
            self._answer(200, json.dumps(records).encode())

        def _answer(self, status: int, payload: bytes) -> None:
            with contextlib.suppress(OSError):
                self.send_response(status)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ready.set()
    server.serve_forever()


def scenario_webhook_hang(bench: Bench, stack: contextlib.ExitStack) -> Result:
    res = Result("webhook-hang", recovery_what="fast receiver: terminal event -> callback p99")
    timeout_s = 15.0
    d = Deployment(bench, "webhook-hang", stack, redis_on=False,
                   env={"CONTROLROOM_CALLBACK_ALLOWLIST": "127.0.0.1"})
    d.start_api()
    with d.client() as http:
        secret = http.post(f"{d.url}{API}/webhooks/secret").json()["secret"]
    ctx = mp.get_context("spawn")
    ports: dict[str, int] = {}
    for label, hang in (("fast", 0.0), ("hanging", 30.0)):
        ports[label], ready = free_port(), ctx.Event()
        proc = ctx.Process(target=receiver_main, args=(ports[label], secret, hang, ready), daemon=True)
        proc.start()
        stack.callback(proc.kill)
        if not ready.wait(30):
            raise RuntimeError(f"the {label} receiver did not start")
    n, window = (60, 10.0) if bench.args.quick else (200, 20.0)
    kind: dict[str, str] = {}
    with d.client() as http:
        for i in range(n):
            label = "hanging" if i % 10 == 0 else "fast"
            body = {"job_type": "spark_etl",
                    "spec": {"description": "webhook fault", "job_name": "faults-hooks"},
                    "code": {"files": [{"path": "main.py", "content": "print(1)\n"}]},
                    "callbacks": {"on_complete": f"http://127.0.0.1:{ports[label]}/hook"}}
            kind[d.submit(http, body)] = label
    from standardwebhooks.webhooks import Webhook

    hook, start = Webhook(secret), time.monotonic()
    hanging_n = sum(v == "hanging" for v in kind.values())
    log(f"webhook-hang: completing {n} runs over {window:.0f} s ({hanging_n} calling the hanging receiver)")
    with httpx.Client(timeout=30) as http:
        for i, run_id in enumerate(kind):
            time.sleep(max(0.0, start + window * i / n - time.monotonic()))
            raw = json.dumps({"run_id": run_id, "status": "completed", "summary": "bench"})
            msg_id, now = f"msg_faults_{run_id}", datetime.now().astimezone()
            r = http.post(f"{d.url}{API}/webhooks/continue", content=raw, headers={
                "content-type": "application/json", "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": hook.sign(msg_id, now, raw)})
            r.raise_for_status()
    finished = time.monotonic()
    hanging = {r for r, k in kind.items() if k == "hanging"}
    fast = set(kind) - hanging

    def records(label: str) -> list[dict[str, Any]]:
        return list(httpx.get(f"http://127.0.0.1:{ports[label]}/records", timeout=30).json())

    with contextlib.suppress(RuntimeError):
        wait_for(lambda: {r["run_id"] for r in records("fast")} >= fast, 60, "the fast callbacks")
    fast_drain = time.monotonic() - finished
    hang_deadline = (len(hanging) / 4 + 1) * (timeout_s + 6) + 30
    with contextlib.suppress(RuntimeError):
        wait_for(lambda: {r["run_id"] for r in records("hanging")} >= hanging, hang_deadline,
                 "an attempt of every hanging callback")
    got = records("fast")
    delays = sorted((r["at"] - datetime.fromisoformat(r["completed_at"]).timestamp()) * 1000 for r in got)
    per_run = Counter(r["run_id"] for r in got)
    hung = records("hanging")
    res.runs = n
    res.lost = len(fast - set(per_run)) + len(hanging - {r["run_id"] for r in hung})
    res.duplicated = sum(c - 1 for c in per_run.values() if c > 1)
    p99 = percentile(delays, 99)
    res.recovery_s = None if p99 is None else p99 / 1000
    res.details.update({
        "fast callbacks: received / p50 / p99 / max": f"{len(got)} / {percentile(delays, 50) or 0:.0f} / "
        f"{p99 or 0:.0f} / {delays[-1] if delays else 0:.0f} ms",
        "fast: all received after the last completion": f"{fast_drain:.1f} s",
        "hanging callbacks: runs / attempts received": f"{len(hanging)} / {len(hung)}",
        "signatures not verifying": sum(not r["verified"] for r in got + hung),
        "sender": f"webhook timeout {timeout_s:.0f} s (default), 4 in flight per endpoint",
    })
    return res


RUNNERS: dict[str, Callable[[Bench, contextlib.ExitStack], Result]] = {
    "db-outage": scenario_db_outage, "worker-kill": scenario_worker_kill, "api-kill": scenario_api_kill,
    "redis-flush": scenario_redis_flush, "projector-kill": scenario_projector_kill,
    "webhook-hang": scenario_webhook_hang,
}


# --------------------------------------------------------------------------- the bench


class Bench:
    """The cluster and the Redis database every scenario shares (one database each)."""

    def __init__(self, args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.redis_url = f"redis://{args.redis_host}:{args.redis_port}/{args.redis_db}"
        client = self.redis()
        foreign = [k for k in client.scan_iter(count=1000) if not k.startswith(b"controlroom-faults-")]
        if foreign:
            raise SystemExit(f"Redis database {args.redis_db} holds keys that aren't this bench's "
                             f"({foreign[0]!r}, ...): choose another with --redis-db")
        self.flush_redis()
        stack.callback(self.flush_redis)
        self.cluster = Cluster()
        stack.callback(self.cluster.remove)
        self.cluster_up = False
        self.deployment: Deployment | None = None
        self.start_cluster()

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def flush_redis(self) -> None:
        """FLUSHDB on the bench's own database number, nothing else."""
        with contextlib.suppress(redis.RedisError):
            client = self.redis()
            assert client.connection_pool.connection_kwargs.get("db") == self.args.redis_db
            client.flushdb()

    def start_cluster(self) -> None:
        self.cluster.start()
        self.cluster_up = True

    def stop_cluster(self) -> None:
        self.cluster_up = False
        self.cluster.stop()


def render(results: list[Result], meta: dict[str, Any]) -> str:
    out = ["", "Control Room fault injection (bench/faults.py)"]
    out += [f"  {k}: {v}" for k, v in meta.items()]
    head = f"{'scenario':<16}{'runs':>6}{'lost':>6}{'dup':>5}{'stuck':>7}{'wrong':>7}{'lines -/+':>11}" \
           f"{'alive':>7}{'recovery':>10}  verdict"
    out += ["", head, "-" * len(head)]
    for r in results:
        wrong = f"{r.wrong}" + ("" if r.wrong_counts else "*")
        alive = "-" if r.max_alive is None else str(r.max_alive)
        rec = "-" if r.recovery_s is None else f"{r.recovery_s:.1f} s"
        verdict = "ERROR" if r.error else ("FAIL " + ", ".join(r.bad()) if r.bad() else "ok")
        out.append(f"{r.scenario:<16}{r.runs:>6}{r.lost:>6}{r.duplicated:>5}{r.stuck:>7}{wrong:>7}"
                   f"{f'{r.lines_missing}/{r.lines_duplicated}':>11}{alive:>7}{rec:>10}  {verdict}")
    out.append("  * for information: not counted against zero in this scenario")
    for r in results:
        out += ["", f"{r.scenario}: recovery = {r.recovery_what}"]
        if r.error:
            out.append(f"  error: {r.error}")
        out += [f"  {k}: {v}" for k, v in r.details.items()]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable; default: all")
    p.add_argument("--quick", action="store_true", help="shorter outages and fewer runs (a smoke run)")
    p.add_argument("--long", action="store_true", help="db-outage: 60 s instead of 30 s")
    p.add_argument("--redis-host", default="127.0.0.1")
    p.add_argument("--redis-port", type=int, default=6379)
    p.add_argument("--redis-db", type=int, default=14, help="the bench's own database number (FLUSHDB'd)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.json:
        args.json = str(Path(args.json).resolve())
    # Processes start in a neutral directory: `python -m` (how `worker --processes` starts its
    # children) imports `controlroom` from the current directory first, which in a checkout is
    # the source tree, not the installed copy the other processes run.
    os.chdir(tempfile.gettempdir())
    if not available():
        print(MISSING, file=sys.stderr)
        return 2
    return run_cleaning_up(lambda stack: run(args, stack))


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    busy = host_busy_cores()
    build, fingerprint = _build(), _fingerprint()
    bench = Bench(args, stack)
    results: list[Result] = []
    for name in args.scenario or SCENARIOS:
        log(f"scenario {name} ...")
        t0 = time.monotonic()
        with contextlib.ExitStack() as scenario_stack:
            bench.deployment = None
            try:
                results.append(RUNNERS[name](bench, scenario_stack))
            except Exception as e:
                results.append(Result(name, error=f"{type(e).__name__}: {e}"))
                if not bench.cluster_up:
                    bench.start_cluster()
            if bench.deployment is not None and (deaths := bench.deployment.deaths()):
                results[-1].details["processes that died on their own"] = deaths
                results[-1].error = results[-1].error or "a Control Room process died on its own"
        log(f"scenario {name}: {time.monotonic() - t0:.0f} s")
    meta = {"host": f"{os.cpu_count()} cores, busy {busy} cores before the start",
            "database": f"PostgreSQL 15 cluster of the bench's own on port {bench.cluster.port}",
            "redis": bench.redis_url, "mode": "quick" if args.quick else "long" if args.long else "default",
            "installed build": _same_build(build, fingerprint), "date": time.strftime("%Y-%m-%d %H:%M")}
    print(render(results, meta))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]},
                                              indent=2, default=str))
    return 1 if any(r.bad() for r in results) else 0


def _same_build(before: str, fingerprint: str) -> str:
    return before if _fingerprint() == fingerprint else f"{before}, REINSTALLED DURING THE RUN"


def _fingerprint() -> str:
    """A digest of the installed controlroom package's files."""
    digest = hashlib.sha256()
    root = Path(sysconfig.get_paths()["purelib"]) / "controlroom"
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _build() -> str:
    """The commit whose controlroom/ the installed copy (what `controlroom` runs) is, file by file:
    HEAD, else the latest of the last 50 commits that matches it."""
    def git(*args: str) -> list[str]:
        return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                              text=True).stdout.splitlines()

    installed = Path(sysconfig.get_paths()["purelib"])
    hashes: dict[str, str | None] = {}

    def blob(path: str) -> str | None:
        if path not in hashes:
            try:
                data = (installed / path).read_bytes()
                hashes[path] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            except OSError:
                hashes[path] = None
        return hashes[path]

    try:
        commits = git("log", "--format=%h", "-50")
        for n, commit in enumerate(commits):
            tree = [line.split(None, 3) for line in git("ls-tree", "-r", commit, "controlroom")]
            if all(blob(path) in (sha, None) for _, _, sha, path in tree):
                return commit if n == 0 else f"{commit} (HEAD is {commits[0]}: newer commits not installed)"
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return f"none of the last 50 commits (HEAD {commits[0]}): installed from a modified tree"



if __name__ == "__main__":
    sys.exit(main())
