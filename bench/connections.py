"""PostgreSQL connections one `controlroom serve` holds: at rest, and under a submit load.

    python bench/connections.py                      # 16 clients x 20 submits
    python bench/connections.py --clients 32 --submits 40

It creates a fresh database on DATABASE_URL's server (default: the machine's PostgreSQL),
starts `controlroom serve` (API, read models, webhooks and its in-process worker) on it, and
samples `pg_stat_activity` every 0.2 s for the connections named `controlroom-serve:<pid>`
(the bench's own queries are not counted): once settled at rest, then while the clients submit
runs (each followed by a GET), and until the runs have finished. Jobs run unsandboxed here
(the figure is about connections, not isolation).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlroom.api.auth import ALL_SCOPES, issue_token

SERVER = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
JOB = {"job_type": "spark_etl", "code": {"files": [{"path": "main.py", "content": "print(1)"}]},
       "spec": {"text": "a job of the connection bench"}}
SAMPLE_S = 0.2


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


class Sampler:
    """Counts the database's connections every SAMPLE_S; keeps the highest seen."""

    def __init__(self, server: str, database: str) -> None:
        self.server, self.database = server, database
        self.peak = 0
        self.at_peak: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> list[tuple[str, str]]:
        """(application_name, last statement) of each connection to the database now."""
        with psycopg.connect(self.server, autocommit=True) as conn:
            return conn.execute("SELECT application_name, left(query, 60) FROM pg_stat_activity "
                                "WHERE datname = %s AND application_name LIKE 'controlroom-%%'",
                                (self.database,)).fetchall()

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = self.sample()
            if len(rows) > self.peak:
                self.peak, self.at_peak = len(rows), rows
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def submit_load(url: str, token: str, clients: int, submits: int) -> list[str]:
    def client(_: int) -> list[str]:
        ids = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as http:
            for _ in range(submits):
                resp = http.post("/api/v1/jobs/run", json=JOB)
                resp.raise_for_status()
                ids.append(resp.json()["run_id"])
                http.get(f"/api/v1/runs/{ids[-1]}").raise_for_status()
        return ids

    with ThreadPoolExecutor(clients) as pool:
        return [i for ids in pool.map(client, range(clients)) for i in ids]


def finished(server_db: str) -> int:
    with psycopg.connect(server_db) as conn:
        row = conn.execute("SELECT count(*) FROM run_status WHERE status IN "
                           "('completed', 'failed', 'cancelled')").fetchone()
    return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--submits", type=int, default=20, help="per client")
    p.add_argument("--port", type=int, default=18931)
    p.add_argument("--verbose", action="store_true", help="list the connections at the peak")
    args = p.parse_args(argv)
    database = f"bench_connections_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    dsn = with_database(SERVER, database)
    data = Path(tempfile.mkdtemp(prefix="controlroom-connections-"))
    env = {**os.environ, "DATABASE_URL": dsn, "CONTROLROOM_DATA_DIR": str(data / "data"),
           "CONTROLROOM_PORT": str(args.port), "CONTROLROOM_JWT_SECRET": uuid.uuid4().hex,
           "CONTROLROOM_UNSAFE_NO_SANDBOX": "1",
           "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13")}
    exe = Path(sys.executable).with_name("controlroom")
    serve = subprocess.Popen([str(exe), "serve"], env=env, stdout=subprocess.DEVNULL,
                             stderr=open(data / "serve.log", "w"))  # noqa: SIM115
    url = f"http://127.0.0.1:{args.port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or serve.poll() is not None:
                print((data / "serve.log").read_text()[-3000:], file=sys.stderr)
                return 1
            time.sleep(0.3)
        time.sleep(3)  # settled: pools at their resting size
        with Sampler(SERVER, database) as rest:
            time.sleep(3)
        token = issue_token(env["CONTROLROOM_JWT_SECRET"], tenant="bench", sub="bench",
                            scopes=ALL_SCOPES, ttl_s=3600)
        with Sampler(SERVER, database) as load:
            started = time.monotonic()
            ids = submit_load(url, token, args.clients, args.submits)
            took = time.monotonic() - started
            deadline = time.monotonic() + 300
            while finished(dsn) < len(ids) and time.monotonic() < deadline:
                time.sleep(0.5)
        done = finished(dsn)
    finally:
        serve.terminate()
        serve.wait(30)
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print(f"controlroom serve (API + read models + webhooks + worker), {args.clients} clients "
          f"x {args.submits} submits")
    print(f"  at rest:           {rest.peak} connections")
    print(f"  under load (peak): {load.peak} connections  "
          f"({len(ids)} submits in {took:.1f} s, {done} runs finished)")
    if args.verbose:
        for name, query in sorted(load.at_peak):
            print(f"    {name:<28} {query}")
    return 0 if done == len(ids) else 1


if __name__ == "__main__":
    raise SystemExit(main())
