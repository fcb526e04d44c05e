"""Lineage graph benchmark: a realistic 1,000,000-edge graph, queried over HTTP.

    python bench/lineage.py                       # 1M edges on a fresh database of DATABASE_URL
    python bench/lineage.py --edges 200000 --json /tmp/lineage.json

The graph is layered like a warehouse: raw tables → staging → … → marts, 6 layers of 40,000
tables. Each table below the first is written by one job reading ~5 tables of the layer
above; 15 % of reads hit one of 60 shared "hub" tables per layer (dimensions, calendars), and
0.1 % of edges point back up (cycles). Each job has one or two runs spread over a year.

Load: the bulk path — rows in `lineage_edges`' shape COPYed straight into the read model
(what a projection rebuild writes), because a million events through the log would take
the benchmark's whole budget; the projection path is measured separately on OpenLineage
events posted to the API (`ingest`), and its rate printed. Then `controlroom serve
--no-worker` starts on that database; its in-memory graph builds in the background and
queries run once it is ready (one keep-alive client, everything on the same cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from controlroom.adapters.postgres.database import apply_schema
from controlroom.api.auth import ALL_SCOPES, issue_token

TENANT = "bench"
LAYERS, PER_LAYER, HUBS = 6, 40_000, 60
HUB_SHARE, BACK_SHARE, MEAN_INPUTS = 0.15, 0.001, 4.7
NOW = datetime(2026, 11, 1, tzinfo=UTC)
COLUMNS = ["tenant_id", "source", "target", "job_id", "job_namespace", "job_name",
           "source_namespace", "target_namespace", "first_run_id", "last_run_id", "first_seen",
           "last_seen", "seen_count", "first_position", "position"]
SECRET = "bench-" + uuid.uuid4().hex


def name(layer: int, i: int) -> str:
    return f"l{layer}.t{i:05d}"


def edges(total: int, rnd: random.Random) -> Any:
    """Rows of a layered graph with hubs and a few back edges, `total` of them."""
    made = position = 0
    for layer in range(1, LAYERS):
        for i in range(PER_LAYER):
            if made >= total:
                return
            target, job = name(layer, i), f"build_{name(layer, i)}"
            k = min(1 + int(rnd.expovariate(1 / MEAN_INPUTS)), 60, total - made)
            sources = set()
            while len(sources) < k:
                if rnd.random() < BACK_SHARE and layer < LAYERS - 1:
                    sources.add(name(layer + 1, rnd.randrange(PER_LAYER)))
                elif rnd.random() < HUB_SHARE:
                    sources.add(name(layer - 1, rnd.randrange(HUBS)))
                else:
                    sources.add(name(layer - 1, rnd.randrange(PER_LAYER)))
            first = NOW - timedelta(days=rnd.uniform(1, 365))
            last = first + (NOW - first) * rnd.random()
            runs = (str(uuid.uuid4()), str(uuid.uuid4()))
            jid = uuid.uuid5(uuid.NAMESPACE_URL, f"controlroom:job:{TENANT}:bench:{job}")
            position += 1
            for source in sources:
                yield (TENANT, source, target, jid, "bench", job, "warehouse", "warehouse",
                       runs[0], runs[1], first, last, rnd.randint(1, 365), position, position)
            made += k


async def load(dsn: str, total: int, seed: int) -> dict[str, Any]:
    """COPY the generated rows in batches; (seconds, table size)."""
    rnd, batch, started = random.Random(seed), [], time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        for row in edges(total, rnd):
            batch.append(row)
            if len(batch) >= 100_000:
                await conn.copy_records_to_table("lineage_edges", records=batch, columns=COLUMNS)
                batch = []
        if batch:
            await conn.copy_records_to_table("lineage_edges", records=batch, columns=COLUMNS)
        await conn.execute("ANALYZE lineage_edges")
        seconds = time.perf_counter() - started
        size = await conn.fetchval("SELECT pg_total_relation_size('lineage_edges')")
        count = await conn.fetchval("SELECT count(*) FROM lineage_edges")
    finally:
        await conn.close()
    return {"load_s": seconds, "table_mb": size / 2**20, "edges": count}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(dsn: str, port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTROLROOM_", "REDIS_"))}
    env.update(DATABASE_URL=dsn, CONTROLROOM_DATA_DIR=str(data_dir), CONTROLROOM_PORT=str(port),
               CONTROLROOM_JWT_SECRET=SECRET)
    return subprocess.Popen([sys.executable, "-m", "controlroom.cli", "serve", "--no-worker"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_graph(http: httpx.Client, entity: str, timeout: float = 300) -> float:
    """Seconds until the graph answers for `entity` (the in-memory build is done)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            if http.get("/api/v1/lineage/graph", params={"entity": entity}).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the lineage graph never became ready")


def timed(http: httpx.Client, params: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency percentiles and result sizes of GET /lineage/graph for each params set."""
    times, nodes, links, truncated, missing = [], [], [], 0, 0
    for p in params:
        t = time.perf_counter()
        r = http.get("/api/v1/lineage/graph", params=p)
        elapsed = (time.perf_counter() - t) * 1000
        if r.status_code == 404:  # a table of a layer a smaller run never reached
            missing += 1
            continue
        times.append(elapsed)
        body = r.json()
        links.append(len(body["upstream"]) + len(body["downstream"]))
        nodes.append(len(body.get("nodes") or []))
        truncated += bool(body["truncated"])
    times.sort()

    def pct(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))]

    return {"n": len(times), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": times[-1],
            "mean_links": sum(links) / len(links), "max_links": max(links),
            "mean_nodes": sum(nodes) / len(nodes), "truncated": truncated, "missing": missing}


def neighbourhoods(http: httpx.Client, rnd: random.Random, want: int = 1000) -> list[dict[str, Any]]:
    """Queries whose answer holds about `want` edges (±10 %), found by widening the depth."""
    found: list[dict[str, Any]] = []
    for _ in range(400):
        entity = name(rnd.randrange(LAYERS), rnd.randrange(2000))
        direction = rnd.choice(("upstream", "downstream"))
        for depth in range(1, 6):
            p = {"entity": entity, "depth": depth, "direction": direction}
            r = http.get("/api/v1/lineage/graph", params=p)
            edges = len(r.json().get("edges") or []) if r.status_code == 200 else 0
            if abs(edges - want) <= want // 10:
                found.append(p)
            if edges > want or r.status_code != 200:
                break
        if len(found) >= 20:
            break
    return found


async def ingest(url: str, token: str, events: int, inputs: int) -> dict[str, Any]:
    """The projection path: OpenLineage events through the API, log and projection."""
    async def post(client: httpx.AsyncClient, i: int) -> None:
        body = {"eventType": "COMPLETE", "eventTime": datetime.now(UTC).isoformat(),
                "producer": "bench", "run": {"runId": str(uuid.uuid4())},
                "job": {"namespace": "bench-ingest", "name": f"job{i}"},
                "inputs": [{"namespace": "w", "name": f"src.t{i}_{k}"} for k in range(inputs)],
                "outputs": [{"namespace": "w", "name": f"dst.t{i}"}]}
        r = await client.post("/api/v1/lineage", json=body)
        r.raise_for_status()

    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        for first in range(0, events, 8):
            await asyncio.gather(*(post(client, i) for i in range(first, min(first + 8, events))))
    seconds = time.perf_counter() - started
    return {"events": events, "edges": events * inputs, "seconds": seconds,
            "edges_per_s": events * inputs / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--edges", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--database-url", default=os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    dbname = f"controlroom_bench_lineage_{uuid.uuid4().hex[:8]}"
    admin = psycopg_dsn = args.database_url
    dsn = urlsplit(admin)._replace(path=f"/{dbname}").geturl()
    asyncio.run(_admin(psycopg_dsn, f'CREATE DATABASE "{dbname}"'))
    results: dict[str, Any] = {"edges_requested": args.edges}
    data_dir = Path(f"/tmp/{dbname}")
    port = 18_000 + random.randrange(2000)
    url = f"http://127.0.0.1:{port}"
    token = issue_token(SECRET, tenant=TENANT, sub="bench", scopes=ALL_SCOPES, ttl_s=3600)
    try:
        apply_schema(dsn)
        empty = serve(dsn, port, data_dir)
        try:
            with httpx.Client(base_url=url, timeout=30) as probe:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        if probe.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.2)
            time.sleep(1)
            results["rss_empty_mb"] = rss_mb(empty.pid)
        finally:
            empty.terminate()
            empty.wait(30)
        results.update(asyncio.run(load(dsn, args.edges, args.seed)))
        print(f"loaded {results['edges']:,} edges in {results['load_s']:.1f} s; "
              f"lineage_edges is {results['table_mb']:.0f} MB on disk", flush=True)
        server = serve(dsn, port, data_dir)
        try:
            run_queries(url, token, server.pid, results, args.seed)
        finally:
            server.terminate()
            server.wait(30)
    finally:
        asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(results, indent=2, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


def run_queries(url: str, token: str, pid: int, results: dict[str, Any], seed: int) -> None:
    rnd = random.Random(seed + 1)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        results["graph_build_s"] = wait_graph(http, name(1, 0))
        results["rss_loaded_mb"] = rss_mb(pid)
        results["index_mb"] = results["rss_loaded_mb"] - results["rss_empty_mb"]
        print(f"graph ready after {results['graph_build_s']:.1f} s; server RSS "
              f"{results['rss_loaded_mb']:.0f} MB (empty: {results['rss_empty_mb']:.0f} MB)", flush=True)

        def pick() -> str:
            layer = rnd.randrange(LAYERS)
            return name(layer, rnd.randrange(HUBS) if rnd.random() < 0.05 else rnd.randrange(PER_LAYER))

        timed(http, [{"entity": pick(), "depth": 3} for _ in range(50)])  # warm-up
        results["depth1"] = timed(http, [{"entity": pick()} for _ in range(1000)])
        results["depth3"] = timed(http, [{"entity": pick(), "depth": 3} for _ in range(300)])
        results["depth3_as_of"] = timed(http, [
            {"entity": pick(), "depth": 3, "as_of": (NOW - timedelta(days=180)).isoformat()}
            for _ in range(300)])
        hoods = neighbourhoods(http, rnd)
        results["edges_1000"] = timed(http, hoods * 5) if hoods else None
    results["ingest"] = asyncio.run(ingest(url, token, events=400, inputs=25))
    for key in ("depth1", "depth3", "depth3_as_of", "edges_1000"):
        if results.get(key):
            r = results[key]
            print(f"{key:>13}: p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.1f} ms"
                  f"  links mean {r['mean_links']:.0f} max {r['max_links']}  nodes mean "
                  f"{r['mean_nodes']:.0f}  truncated {r['truncated']}/{r['n']}", flush=True)
    i = results["ingest"]
    print(f"projection path: {i['edges']:,} edges in {i['events']} OpenLineage events, "
          f"{i['seconds']:.1f} s ({i['edges_per_s']:.0f} edges/s)", flush=True)


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
