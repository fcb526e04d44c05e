"""Follow a run to its end and turn the outcome into an exit code a pipeline can branch on."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid

import msgspec

from controlroom.client.http import ClientError, ControlRoomClient
from controlroom.client.render import Renderer, renderer

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 2
EXIT_TIMEOUT = 3
EXIT_ERROR = 4
"""The run could not be submitted or watched (bad input, refused, unreachable)."""
EXIT_CODES = {"completed": EXIT_COMPLETED, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}


async def follow(client: ControlRoomClient, run_id: str, out: Renderer, *, after: int = 0) -> int:
    """Show the run's events until its `end`; the exit code of its final status."""
    events = client.run_events(run_id, after=after,
                               on_reconnect=lambda why: out.note(f"reconnecting: {why}"))
    async with contextlib.aclosing(events) as stream:
        async for message in stream:
            out.event(message)
            if message.event == "end":
                status = msgspec.json.decode(message.data).get("status")
                return EXIT_CODES.get(status, EXIT_FAILED)
    return EXIT_ERROR  # the stream only stops at `end`; this is not reached


async def watch(url: str, token: str, run_id: str, *, as_json: bool, timeout: float | None,
                after: int = 0) -> int:
    """`controlroom runs watch`: follow a run until it ends or `timeout` passes."""
    client = ControlRoomClient(url, token)
    out = renderer(run_id, as_json=as_json)
    try:
        async with asyncio.timeout(timeout):
            return await follow(client, run_id, out, after=after)
    except TimeoutError:
        out.note(f"timed out after {timeout:g}s; run {run_id} goes on")
        return EXIT_TIMEOUT
    except ClientError as e:
        out.note(f"error: {e}")
        return EXIT_ERROR
    finally:
        out.close()
        await client.close()


async def submit(url: str, token: str, body: bytes, *, wait: bool, as_json: bool,
                 timeout: float | None, idempotency_key: str | None = None) -> int:
    """`controlroom submit`: submit a job; with `wait`, follow its run to the end."""
    client = ControlRoomClient(url, token)
    key = idempotency_key or f"cli-{uuid.uuid4()}"  # our own retries of this POST stay safe
    out: Renderer | None = None
    try:
        async with asyncio.timeout(timeout if wait else None):
            run = await client.submit(body, key)
            run_id = str(run["run_id"])
            if not wait:
                print(msgspec.json.encode(run).decode() if as_json else run_id, flush=True)
                return EXIT_COMPLETED
            out = renderer(run_id, as_json=as_json)
            out.note(f"submitted run {run_id}")
            return await follow(client, run_id, out)
    except TimeoutError:
        _note(out, f"timed out after {timeout:g}s")
        return EXIT_TIMEOUT
    except ClientError as e:
        _note(out, f"error: {e}")
        return EXIT_ERROR
    finally:
        if out is not None:
            out.close()
        await client.close()


def _note(out: Renderer | None, text: str) -> None:
    if out is not None:
        out.note(text)
    else:
        print(text, file=sys.stderr)
