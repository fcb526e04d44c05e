"""Webhook benchmark: 1,000 runs completing within a minute, each calling back a local receiver.

    python bench/webhooks.py                       # 1,000 runs completed over 60 s
    python bench/webhooks.py --runs 200 --window 10 --json /tmp/webhooks.json

Starts `controlroom serve --no-worker` on a fresh database (127.0.0.1 allowlisted, retries after
1, 2, 4 s instead of Standard Webhooks' 24 h) and a receiver process on 127.0.0.1 that verifies
every signature with the `standardwebhooks` library. Then it submits N runs with
`callbacks.on_complete`, and completes them — evenly over the window — through the inbound hook
`POST /api/v1/webhooks/continue`, signed with the tenant's secret, as an external runner would
(no job processes run: this measures the webhook path, not job execution). The receiver answers
503 to the first attempt of a fixed share of callbacks (`--fail-rate`) to exercise retries.

Measured: terminal event (the run's `completed_at`, server clock) -> callback received (receiver
clock, same host), for first attempts and for the retried ones; callbacks lost (never
acknowledged); duplicates beyond the injected failures (must be 0). Exit 1 if any is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import secrets
import signal
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from api import (
    DEFAULT_DATABASE_URL,
    Server,
    _fmt,
    controlroom_exe,
    free_port,
    fresh_database,
    percentile,
    redact,
    run_cleaning_up,
    temp_dir,
)
from standardwebhooks.webhooks import Webhook

API = "/api/v1"
READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 60.0
JOB = {"job_type": "spark_etl", "code": {"files": [{"path": "main.py", "content": "print(1)\n"}]},
       "spec": {"description": "webhook benchmark", "job_name": "bench-webhooks"}}


def fails_first(webhook_id: str, rate: float) -> bool:
    """Whether the receiver answers 503 to this callback's first attempt (a fixed, hashed share)."""
    return int(hashlib.sha256(webhook_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < rate


def receiver_main(port: int, secret: str, fail_rate: float, ready: Any) -> None:
    """The receiver process: verify, record, answer; GET /records hands over what it saw."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's cleanup handler (forked)
    hook = Webhook(secret)
    records: list[dict[str, Any]] = []
    seen: Counter[str] = Counter()

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
            wid = headers.get("webhook-id", "")
            seen[wid] += 1
            status = 503 if seen[wid] == 1 and fails_first(wid, fail_rate) else 200
            data = json.loads(body)["data"]
            records.append({"webhook_id": wid, "run_id": data["run_id"], "at": at, "status": status,
                            "completed_at": data["completed_at"], "verified": verified})
            self._answer(status, b"")

        def do_GET(self) -> None:
            self._answer(200, json.dumps(records).encode())

        def _answer(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ready.set()
    server.serve_forever()


async def submit_all(http: httpx.AsyncClient, n: int, callback: str, clients: int) -> list[str]:
    """N runs with an on_complete callback, `clients` submitting at once."""
    ids: list[str] = []
    body = {**JOB, "callbacks": {"on_complete": callback}}

    async def one(count: int) -> None:
        for _ in range(count):
            r = await http.post(f"{API}/jobs/run", json=body)
            r.raise_for_status()
            ids.append(r.json()["run_id"])

    await asyncio.gather(*(one(n // clients + (i < n % clients)) for i in range(clients)))
    return ids


async def complete_all(http: httpx.AsyncClient, ids: list[str], secret: str, window: float) -> float:
    """Complete every run through the signed inbound hook, evenly over `window` seconds."""
    hook, start = Webhook(secret), time.monotonic()
    limit = asyncio.Semaphore(32)

    async def one(i: int, run_id: str) -> None:
        await asyncio.sleep(max(0.0, start + window * i / len(ids) - time.monotonic()))
        raw = json.dumps({"run_id": run_id, "status": "completed", "summary": "bench"})
        msg_id, now = f"msg_bench_{run_id}", datetime.now(UTC)
        headers = {"content-type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": hook.sign(msg_id, now, raw)}
        async with limit:
            r = await http.post(f"{API}/webhooks/continue", content=raw, headers=headers)
        r.raise_for_status()

    await asyncio.gather(*(one(i, rid) for i, rid in enumerate(ids)))
    return time.monotonic() - start


def analyse(records: list[dict[str, Any]], ids: list[str], fail_rate: float) -> dict[str, Any]:
    """Latencies, lost and duplicated callbacks from what the receiver saw."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        by_id[rec["webhook_id"]].append(rec)
    acked = {rec["run_id"] for rec in records if rec["status"] == 200}
    first, retried = [], []
    duplicates = 0
    for wid, recs in by_id.items():
        recs.sort(key=lambda r: r["at"])
        done = datetime.fromisoformat(recs[0]["completed_at"]).timestamp()
        first.append((recs[0]["at"] - done) * 1000)
        expected = 2 if fails_first(wid, fail_rate) else 1
        if expected == 2 and len(recs) >= 2:
            retried.append((recs[1]["at"] - done) * 1000)
        duplicates += max(0, len(recs) - expected)
    first.sort()
    retried.sort()
    return {
        "runs": len(ids), "callbacks_received": len(records), "lost": len(set(ids) - acked),
        "unexpected_duplicates": duplicates, "unverified": sum(not r["verified"] for r in records),
        "retried": len(retried), "first_p50_ms": percentile(first, 50), "first_p99_ms": percentile(first, 99),
        "first_max_ms": first[-1] if first else None, "retried_p50_ms": percentile(retried, 50),
        "retried_p99_ms": percentile(retried, 99),
    }


async def projection_lag_ms(dsn: str) -> list[float]:
    """Terminal event -> its delivery row written by the outbox projection (database clock)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("""SELECT extract(epoch FROM created_at
            - (payload->'data'->>'completed_at')::timestamptz) * 1000 AS ms
            FROM webhook_deliveries WHERE event_type = 'run.completed' ORDER BY 1""")
    finally:
        await conn.close()
    return [float(r["ms"]) for r in rows]


def render(meta: dict[str, Any], r: dict[str, Any]) -> str:
    rows = [
        ("runs completed / window", f"{r['runs']} in {r['complete_s']:.1f} s (target: within 60 s)"),
        ("callbacks received (attempts)", str(r["callbacks_received"])),
        ("lost (never acknowledged)", f"{r['lost']} (target 0)"),
        ("duplicates beyond injected 503s", f"{r['unexpected_duplicates']} (target 0)"),
        ("signatures not verifying", str(r["unverified"])),
        ("terminal event -> callback, first attempt: p50 / p99 / max",
         f"{_fmt(r['first_p50_ms'], '.1f')} / {_fmt(r['first_p99_ms'], '.1f')} / "
         f"{_fmt(r['first_max_ms'], '.1f')} ms"),
        ("  of which event -> outbox row (the projection): p50 / p99",
         f"{_fmt(r['projected_p50_ms'], '.1f')} / {_fmt(r['projected_p99_ms'], '.1f')} ms"),
        (f"retried after a 503 ({r['retried']}): p50 / p99",
         f"{_fmt(r['retried_p50_ms'], '.0f')} / {_fmt(r['retried_p99_ms'], '.0f')} ms"),
        ("all acknowledged after the last completion", f"{r['drain_s']:.2f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    head = "\n".join(f"# {k}: {v}" for k, v in meta.items())
    return head + "\n" + "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--window", type=float, default=60.0, help="seconds over which the runs complete")
    p.add_argument("--fail-rate", type=float, default=0.02, help="share of callbacks answered 503 once")
    p.add_argument("--retry-schedule", default="0,1,2,4")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cleaning_up(lambda stack: run(args, stack))


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    tmp = temp_dir(stack, "controlroom-webhooks-")
    dsn = fresh_database(args.database_url, stack)
    port, jwt_secret = free_port(), secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLROOM_")}
    env.pop("REDIS_URL", None)
    env.update({"DATABASE_URL": dsn, "CONTROLROOM_DATA_DIR": str(tmp / "data"), "CONTROLROOM_PORT": str(port),
                "CONTROLROOM_JWT_SECRET": jwt_secret, "CONTROLROOM_SECRET_KEY": secrets.token_hex(32),
                "CONTROLROOM_CALLBACK_ALLOWLIST": "127.0.0.1",
                "CONTROLROOM_WEBHOOK_RETRY_SCHEDULE": args.retry_schedule})
    url = f"http://127.0.0.1:{port}"
    api = Server("api", [controlroom_exe(), "serve", "--no-worker"], env, tmp)
    stack.callback(api.stop)
    api.wait_ready(f"{url}/readyz", READY_TIMEOUT_S)

    from controlroom.api.auth import ALL_SCOPES, issue_token

    headers = {"Authorization": "Bearer " + issue_token(jwt_secret, tenant="bench", sub="bench",
                                                        scopes=ALL_SCOPES, ttl_s=3600)}
    secret = httpx.post(f"{url}{API}/webhooks/secret", headers=headers).json()["secret"]
    rport, ready = free_port(), mp.Event()
    receiver = mp.Process(target=receiver_main, args=(rport, secret, args.fail_rate, ready), daemon=True)
    receiver.start()
    stack.callback(receiver.terminate)
    ready.wait(10)

    async def drive() -> tuple[list[str], float]:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            print(f"submitting {args.runs} runs ...", file=sys.stderr)
            ids = await submit_all(http, args.runs, f"http://127.0.0.1:{rport}/hook", 8)
            print(f"completing them over {args.window:.0f} s ...", file=sys.stderr)
            async with httpx.AsyncClient(base_url=url, timeout=30) as hook_http:
                return ids, await complete_all(hook_http, ids, secret, args.window)

    ids, complete_s = asyncio.run(drive())
    finished, deadline = time.monotonic(), time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        records = httpx.get(f"http://127.0.0.1:{rport}/records", timeout=30).json()
        if {r["run_id"] for r in records if r["status"] == 200} >= set(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    lag = asyncio.run(projection_lag_ms(dsn))
    result = {**analyse(records, ids, args.fail_rate), "complete_s": complete_s,
              "drain_s": time.monotonic() - finished, "projected_p50_ms": percentile(lag, 50),
              "projected_p99_ms": percentile(lag, 99)}
    meta = {"host": f"{os.cpu_count()} cores, {sys.platform}", "database": redact(dsn),
            "server": "controlroom serve --no-worker (outbox projection + webhook deliverer in-process)",
            "retry schedule": args.retry_schedule, "fail rate": args.fail_rate}
    print(render(meta, result))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "result": result}, indent=2))
    return 0 if result["lost"] == 0 and result["unexpected_duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
