"""A total deadline for one HTTP exchange, kept by the network streams themselves.

httpx's timeouts bound each connect, read and write on its own: a receiver answering a byte
every few seconds would hold a delivery thread for ever. Inside `within(seconds)`, every
socket operation of the calling thread waits at most what is left of the deadline, and one
started after it fails at once — so connect + write + read together never exceed it.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpcore

_local = threading.local()


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Bound every socket operation of this thread, for the block, by one total deadline."""
    _local.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.at = None


def left(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` cut to what remains of the thread's deadline; `error` once nothing does."""
    at: float | None = getattr(_local, "at", None)
    if at is None:
        return timeout
    remaining = at - time.monotonic()
    if remaining <= 0:
        raise error("the delivery's total time limit passed")
    return remaining if timeout is None else min(timeout, remaining)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every wait is bounded by the calling thread's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read, waiting no longer than the deadline allows."""
        return self._stream.read(max_bytes, left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write, waiting no longer than the deadline allows."""
        self._stream.write(buffer, left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        """Close the underlying stream."""
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        """The TLS stream over this one, its handshake bounded too."""
        return DeadlineStream(self._stream.start_tls(
            ssl_context, server_hostname, left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        """The underlying stream's."""
        return self._stream.get_extra_info(info)
