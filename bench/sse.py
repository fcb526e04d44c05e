"""Live-events benchmark: many SSE subscribers on one run while events are posted at a fixed rate.

    python bench/sse.py                                   # 500 subscribers, 200 events/s, 30 s
    python bench/sse.py --subscribers 100 --duration 10 --json /tmp/sse.json

Starts `controlroom serve --no-worker` on a fresh database (`--split` also runs the projections
in a `controlroom projector` process, as in production), submits one run (it stays queued), then:
  idle     opens N subscribers on the run (GET /runs/{id}/events, Accept: text/event-stream) and,
           once each has its first event, reads the server's RSS: memory per idle subscriber
  live     posts progress events at R/s for D s — 10 per POST by default (`--batch`; open loop, at
           most 8 POSTs in flight), as a worker batches its output: one run's appends are
           serialised, and single-event POSTs top out near 100/s on a 2-core host (write path,
           not streaming) — then cancels the run: every stream must deliver every event once,
           in order, then `end`
Latency is from the POST's acceptance (its 202 received by the poster) to receipt at each
subscriber, on the host's monotonic clock (shared by every process). Subscribers are raw asyncio
HTTP/1.1 clients (uvloop) in K processes: parsing must cost far less than the server's sending.
Everything shares the host's cores. Servers, the database and temp dirs are removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import secrets
import signal
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import httpx
from api import (
    DEFAULT_DATABASE_URL,
    Server,
    _event_loop_run,
    _fmt,
    controlroom_exe,
    cpu_sample,
    cpu_usage,
    free_port,
    fresh_database,
    host_busy_cores,
    percentile,
    postgres_backend_pids,
    redact,
    run_cleaning_up,
    temp_dir,
    verdict,
)

API = "/api/v1"
TARGET_P99_MS = 100.0
MAX_IN_FLIGHT = 8
ID = re.compile(rb"id: (\d+)\r\n")
SEQ = re.compile(r"seq (\d+)")
JOB = {"job_type": "spark_etl", "spec": {"description": "sse benchmark"},
       "code": {"files": [{"path": "main.py", "content": "print('never runs')\n"}]}}


# --------------------------------------------------------------------------- subscribers


class Stream(asyncio.Protocol):
    """One SSE connection: de-chunks the body and notes (id, receipt time) of every message."""

    def __init__(self, request: bytes, ids: array, times: array, done: asyncio.Future[str],
                 chunks: list[int]) -> None:
        self.request, self.ids, self.times, self.done = request, ids, times, done
        self.chunks = chunks  # HTTP chunks received: the server's writes to this stream
        self.buf = b""
        self.head = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buf += data
        if self.head:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 200"):
                self._finish(f"error: {self.buf[:200]!r}")
                return
            self.buf, self.head = self.buf[end + 4:], False
        while (eol := self.buf.find(b"\r\n")) >= 0:  # chunked: size line, payload, CRLF
            size = int(self.buf[:eol], 16)
            if len(self.buf) < eol + 2 + size + 2:
                return
            payload, self.buf = self.buf[eol + 2:eol + 2 + size], self.buf[eol + 4 + size:]
            if size == 0:
                self._finish("closed")
                return
            self.chunks[0] += 1
            for m in ID.finditer(payload):
                self.ids.append(int(m[1]))
                self.times.append(now)
            if b"event: end" in payload:
                self._finish("end")
            elif b"event: resume" in payload:
                self._finish("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish("lost")

    def _finish(self, why: str) -> None:
        if not self.done.done():
            self.done.set_result(why)


async def subscriber(host: str, port: int, path: str, token: str, ready: asyncio.Event,
                     counters: dict[str, int], chunks: list[int]) -> tuple[array, array]:
    """Follow the run to its `end`, reconnecting with Last-Event-ID when told to resume."""
    loop = asyncio.get_running_loop()
    ids, times = array("q"), array("d")
    while True:
        last = f"Last-Event-ID: {ids[-1]}\r\n" if ids else ""
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
                   f"Authorization: Bearer {token}\r\n{last}\r\n").encode()
        done: asyncio.Future[str] = loop.create_future()
        transport, _ = await loop.create_connection(
            lambda: Stream(request, ids, times, done, chunks), host, port)  # noqa: B023 - awaited here
        while not ids and not done.done():
            await asyncio.sleep(0.01)
        ready.set()
        why = await done
        transport.close()
        counters[why] = counters.get(why, 0) + 1
        if why == "end" or why.startswith("error"):
            return ids, times


def _subscribers_child(conn: Any, url: str, path: str, token: str, n: int) -> None:
    """A subscriber process: connect `n`, say so, and report what each received once all ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us

    async def main() -> None:
        host, port = url.removeprefix("http://").split(":")
        counters: dict[str, int] = {}
        chunks = [0]
        events = [asyncio.Event() for _ in range(n)]
        tasks = [asyncio.create_task(subscriber(host, int(port), path, token, e, counters, chunks))
                 for e in events]
        for e in events:
            await e.wait()
        conn.send("ready")
        results = await asyncio.gather(*tasks)
        counters["chunks"] = chunks[0]
        conn.send(([(i.tobytes(), t.tobytes()) for i, t in results], counters))

    with contextlib.suppress(EOFError, BrokenPipeError):
        _event_loop_run(main())


# --------------------------------------------------------------------------- poster


async def post_events(url: str, token: str, run_id: str, rate: float, duration: float, *,
                      batch: int, in_flight: int) -> list[tuple[int, float, float, int]]:
    """Post `rate` progress events a second, `batch` per request: (seq, sent, accepted, status)."""
    out: list[tuple[int, float, float, int]] = []
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    gate = asyncio.Semaphore(in_flight)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                 limits=limits, timeout=30) as client:
        async def one(first: int) -> None:
            async with gate:
                seqs = range(first, first + batch)
                body = [{"event_type": "progress", "percent": s % 101, "message": f"seq {s}"}
                        for s in seqs]
                sent = time.monotonic()
                try:
                    status = (await client.post(f"{API}/runs/{run_id}/events", json=body)).status_code
                except httpx.HTTPError:
                    status = 0
                out.extend((s, sent, time.monotonic(), status) for s in seqs)

        t0, tasks = time.monotonic(), []
        for first in range(0, int(rate * duration), batch):
            await asyncio.sleep(max(0.0, t0 + first / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(first)))
        await asyncio.gather(*tasks)
    return out


def rss_kib(pid: int) -> int:
    """Resident memory of a process (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- analysis


def event_seqs(url: str, headers: dict[str, str], run_id: str) -> dict[int, int]:
    """Version → the poster's sequence number, from the run's JSON pages (after the run ended)."""
    seqs: dict[int, int] = {}
    after = 0
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        while True:
            page = http.get(f"{API}/runs/{run_id}/events", params={"after": after, "limit": 1000}).json()
            for e in page["events"]:
                if m := SEQ.fullmatch(str(e["data"].get("message", ""))):
                    seqs[e["version"]] = int(m[1])
            after = page["last_event_id"]
            if not page["more"]:
                return seqs


def analyse(received: list[tuple[bytes, bytes]], final_version: int, seqs: dict[int, int],
            posts: dict[int, tuple[float, float]]) -> dict[str, Any]:
    """Missed and duplicated events per subscriber, and latency over every delivery."""
    accepted, sent, missed, duplicated, delivered = [], [], 0, 0, 0
    expected = set(range(1, final_version + 1))
    for ids_b, times_b in received:
        ids, times = array("q", ids_b), array("d", times_b)
        delivered += len(ids)
        duplicated += len(ids) - len(set(ids))
        missed += len(expected - set(ids))
        if list(ids) != sorted(ids):
            duplicated += 1  # out of order counts as a fault too
        for v, t in zip(ids, times, strict=True):
            if (seq := seqs.get(v)) is not None and seq in posts:
                sent.append(t - posts[seq][0])
                accepted.append(t - posts[seq][1])
    accepted.sort()
    sent.sort()

    def ms(values: list[float], p: float) -> float | None:
        v = percentile(values, p)
        return None if v is None else round(v * 1000, 2)

    return {"deliveries": delivered, "missed": missed, "duplicated": duplicated,
            "latency_samples": len(accepted),
            "accepted_p50_ms": ms(accepted, 50), "accepted_p99_ms": ms(accepted, 99),
            "accepted_max_ms": ms(accepted, 100), "sent_p50_ms": ms(sent, 50),
            "sent_p99_ms": ms(sent, 99)}


def render(meta: dict[str, Any], r: dict[str, Any]) -> str:
    rows = [
        ("events posted / accepted (202)", f"{r['posted']} at {meta['rate']:g}/s",
         f"{r['accepted']} ({r['achieved_rate']:.1f}/s achieved)", r["accepted"] == r["posted"]),
        ("deliveries (subscribers x events)", f"{r['expected_deliveries']:,}", f"{r['deliveries']:,}",
         r["deliveries"] == r["expected_deliveries"]),
        ("latency POST accepted -> received: p50 / p99", f"p99 < {TARGET_P99_MS:g} ms",
         f"{_fmt(r['accepted_p50_ms'])} / {_fmt(r['accepted_p99_ms'])} ms "
         f"(max {_fmt(r['accepted_max_ms'])})",
         r["accepted_p99_ms"] is not None and r["accepted_p99_ms"] < TARGET_P99_MS),
        ("latency POST sent -> received: p50 / p99", "-",
         f"{_fmt(r['sent_p50_ms'])} / {_fmt(r['sent_p99_ms'])} ms", None),
        ("missed / duplicated", "0 / 0", f"{r['missed']} / {r['duplicated']}",
         r["missed"] == 0 and r["duplicated"] == 0),
        ("streams told to resume (fell behind)", "-", str(r["streams"].get("resume", 0)), None),
        ("server writes per stream (events per write)", "-",
         f"{r['streams'].get('chunks', 0) / meta['subscribers']:.0f} "
         f"({r['deliveries'] / max(1, r['streams'].get('chunks', 0)):.1f})", None),
        ("server memory per idle subscriber", "-",
         f"{r['idle_kib_per_subscriber']:.1f} KiB (RSS +{r['idle_rss_delta_kib'] / 1024:.1f} MiB "
         f"for {meta['subscribers']})", None),
        ("POST /runs/{id}/events latency: p50 / p99", "-",
         f"{_fmt(r['post_p50_ms'])} / {_fmt(r['post_p99_ms'])} ms", None),
    ]
    out = ["Control Room live-events benchmark (bench/sse.py)",
           f"  host      {meta['host']}",
           f"  idle load {_fmt(meta['host_busy_before_cores'])} cores busy before the run",
           f"  server    {meta['server']}",
           f"  load      {meta['subscribers']} subscribers on one run in {meta['processes']} processes;"
           f" {meta['rate']:g} events/s for {meta['duration']:g} s, {meta['batch']} per POST, at most"
           f" {meta['in_flight']} POSTs in flight",
           f"  cores     used while posting: {r['cores']}", "",
           f"{'what':<46} {'target':<22} {'measured':<44} verdict"]
    out += [f"{w:<46} {t:<22} {m:<44} {verdict(ok)}" for w, t, m, ok in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subscribers", type=int, default=500)
    p.add_argument("--rate", type=float, default=200.0, help="events posted per second")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of posting")
    p.add_argument("--batch", type=int, default=10, help="events per POST (default 10)")
    p.add_argument("--in-flight", type=int, default=MAX_IN_FLIGHT, help="POSTs in flight at most")
    p.add_argument("--processes", type=int, default=2, help="subscriber processes")
    p.add_argument("--split", action="store_true",
                   help="projections in a separate `controlroom projector` process")
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
                   help=f"Postgres server for a fresh database (default {DEFAULT_DATABASE_URL})")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # one socket per subscriber
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.subscribers + 1024)), hard))
    return run_cleaning_up(lambda stack: run(args, stack))


def start_servers(args: argparse.Namespace, stack: contextlib.ExitStack, tmp: Path
                  ) -> tuple[str, str, int, str, str]:
    """A fresh database and the server(s) on it: (url, token, API server pid, description, dsn)."""
    dsn = fresh_database(args.database_url, stack)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CONTROLROOM_", "REDIS_"))},
           "DATABASE_URL": dsn,
           "CONTROLROOM_DATA_DIR": str(tmp / "data"), "CONTROLROOM_JWT_SECRET": secrets.token_urlsafe(32)}
    port = free_port()
    argv = [controlroom_exe(), "serve", "--no-worker", "--port", str(port),
            *(["--no-projections"] if args.split else [])]
    server = Server("controlroom", argv, env, tmp)
    stack.callback(server.stop)
    url = f"http://127.0.0.1:{port}"
    server.wait_ready(f"{url}/readyz", timeout=60)
    if args.split:  # after the API: two processes creating the event store at once collide
        projector = Server("projector", [controlroom_exe(), "projector"], env, tmp)
        stack.callback(projector.stop)
        time.sleep(2.0)  # its projections take their locks and catch up
    token = subprocess_token(env)
    desc = " ".join(["controlroom", *argv[1:]]) + (" + controlroom projector" if args.split else
                                                   " (API and projections in one process)")
    return url, token, server.pid, f"{desc}; database {redact(env['DATABASE_URL'])}", env["DATABASE_URL"]


def subprocess_token(env: dict[str, str]) -> str:
    import subprocess

    return subprocess.run([controlroom_exe(), "token", "--tenant", "bench", "--sub", "bench"], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    tmp = temp_dir(stack, "controlroom-sse-bench-")
    url, token, server_pid, server_desc, dsn = start_servers(args, stack, tmp)
    headers = {"Authorization": f"Bearer {token}"}
    submitted = httpx.post(f"{url}{API}/jobs/run", json=JOB, headers=headers, timeout=30)
    if submitted.status_code != 202:
        raise SystemExit(f"cannot submit the run: HTTP {submitted.status_code} {submitted.text}")
    run_id = submitted.json()["run_id"]
    path = f"{API}/runs/{run_id}/events"
    busy = host_busy_cores()
    with httpx.Client(base_url=url, headers={**headers, "Accept": "text/event-stream"}) as warm, \
            warm.stream("GET", path) as resp:  # warm the stream path up before measuring memory
        next(resp.iter_lines())
    time.sleep(0.5)
    rss_before = rss_kib(server_pid)

    ctx = mp.get_context("spawn")
    per = [args.subscribers // args.processes + (i < args.subscribers % args.processes)
           for i in range(args.processes)]
    children = []
    for n in per:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_subscribers_child, args=(child, url, path, token, n), daemon=True)
        proc.start()
        stack.callback(proc.kill)
        children.append((proc, parent))
    for proc, conn in children:
        if not conn.poll(120) or conn.recv() != "ready":
            raise SystemExit(f"subscriber process {proc.pid} did not connect")
    time.sleep(1.0)
    rss_idle = rss_kib(server_pid)
    print(f"{args.subscribers} subscribers connected; posting {args.rate:g}/s for {args.duration:g} s ...",
          file=sys.stderr, flush=True)

    groups = {"server": [server_pid], "subscribers": [p.pid for p, _ in children],
              "poster": [os.getpid()], "pg": asyncio.run(postgres_backend_pids(dsn))}
    a = cpu_sample(groups)
    posts = _event_loop_run(post_events(url, token, run_id, args.rate, args.duration,
                                        batch=args.batch, in_flight=args.in_flight))
    b = cpu_sample(groups)
    httpx.post(f"{url}{API}/runs/{run_id}/cancel", headers=headers, timeout=30)
    received: list[tuple[bytes, bytes]] = []
    streams: dict[str, int] = {}
    for proc, conn in children:
        if not conn.poll(300):
            raise SystemExit(f"subscriber process {proc.pid} did not finish")
        part, counters = conn.recv()
        received += part
        for k, v in counters.items():
            streams[k] = streams.get(k, 0) + v

    ok = {seq: (sent, acc) for seq, sent, acc, status in posts if status == 202}
    seqs = event_seqs(url, headers, run_id)
    final = max(seqs) + 2  # then cancel requested, cancelled
    post_lat = sorted(acc - sent for sent, acc in ok.values())
    window = max(acc for _, acc in ok.values()) - min(sent for sent, _ in ok.values())
    result = {
        "posted": len(posts), "accepted": len(ok), "achieved_rate": len(ok) / window,
        "post_statuses": {str(k): sum(1 for p in posts if p[3] == k) for k in {p[3] for p in posts}},
        "expected_deliveries": args.subscribers * final, "streams": streams,
        "idle_rss_delta_kib": rss_idle - rss_before,
        "idle_kib_per_subscriber": (rss_idle - rss_before) / args.subscribers,
        "post_p50_ms": round(1000 * (percentile(post_lat, 50) or 0), 2),
        "post_p99_ms": round(1000 * (percentile(post_lat, 99) or 0), 2),
        "cores": cpu_usage(a, b), **analyse(received, final, seqs, ok),
    }
    meta = {"host": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
                    f"Python {platform.python_version()}",
            "host_busy_before_cores": busy, "server": server_desc, "subscribers": args.subscribers,
            "processes": args.processes, "rate": args.rate, "duration": args.duration,
            "batch": args.batch, "in_flight": args.in_flight,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print()
    print(render(meta, result))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": result}, indent=2))
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
