"""The ceiling for bench/api.py: a bare Litestar app doing ONE asyncpg primary-key SELECT per request.

It runs on the same stack as `controlroom serve` (see cmd_serve in controlroom/cli/serving.py): uvicorn with
log_level="warning", access_log=False, lifespan="on", started with `asyncio.run(Server.serve())`,
and an asyncpg pool with the same settings as controlroom.adapters.postgres.database.create_read_pool.
No auth, no middleware, no projection: whatever Control Room's GET costs above this is overhead.

    python bench/ceiling_app.py --dsn postgresql://postgres@127.0.0.1:5432/somedb --port 8100

Routes: GET /rows/{id} (1 <= id <= --rows) -> {"id", "name", "value", "created_at"};
GET /ping (no database: uvicorn + Litestar + client harness only); GET /readyz.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import uvicorn
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException

TABLE = "bench_ceiling"
DEFAULT_ROWS = 10_000
SELECT = f"SELECT id, name, value, created_at FROM {TABLE} WHERE id = $1"


class Row(msgspec.Struct):
    """What GET /rows/{id} returns."""

    id: int
    name: str
    value: int
    created_at: datetime


async def _keep_session(_: Any) -> None:
    """Same as the product's pool: no session reset on release."""


async def ensure_table(pool: asyncpg.Pool, rows: int) -> None:
    """Create and fill the table once (idempotent; concurrent starts serialise on a lock)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('controlroom-bench:ceiling'))")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id integer PRIMARY KEY, name text NOT NULL,"
            " value bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
        if await conn.fetchval(f"SELECT count(*) FROM {TABLE}") < rows:
            await conn.execute(
                f"INSERT INTO {TABLE} (id, name, value) SELECT i, 'row-' || i, i * 7 "
                f"FROM generate_series(1, $1) AS i ON CONFLICT DO NOTHING",
                rows,
            )
    await pool.execute(f"ANALYZE {TABLE}")


def create_app(dsn: str, rows: int = DEFAULT_ROWS) -> Litestar:
    """The ceiling app over database `dsn`."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            dsn, min_size=2, max_size=10, command_timeout=10.0, timeout=5.0,
            reset=_keep_session, statement_cache_size=100,
        )
        try:
            await ensure_table(pool, rows)
            app.state.pool = pool
            yield
        finally:
            await pool.close()

    @get("/rows/{row_id:int}")
    async def get_row(state: State, row_id: int) -> Row:
        rec = await state.pool.fetchrow(SELECT, row_id)
        if rec is None:
            raise NotFoundException(f"no row {row_id}")
        return Row(rec["id"], rec["name"], rec["value"], rec["created_at"])

    @get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz(state: State) -> dict[str, str]:
        await state.pool.fetchval("SELECT 1")
        return {"status": "ready"}

    return Litestar(route_handlers=[get_row, ping, readyz], lifespan=[lifespan],
                    logging_config=None, openapi_config=None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                   help="asyncio = exactly what cmd_serve does (asyncio.run(Server.serve()) ignores "
                        "uvicorn's loop setting); uvloop = what uvicorn.run() would pick")
    args = p.parse_args()
    config = uvicorn.Config(create_app(args.dsn, args.rows), host=args.host, port=args.port,
                            log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(server.serve())
    else:
        asyncio.run(server.serve())


if __name__ == "__main__":
    main()
