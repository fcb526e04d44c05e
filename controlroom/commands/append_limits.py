"""How much one append may write, and cutting log output into appends that fit (docs/limits.md).

Every append takes the event log's exclusive lock (commit order must equal log order), so its
size is how long every other writer of every tenant waits: large output is recorded as several
bounded appends, never as one giant transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

MAX_EVENTS_PER_REQUEST = 1000
"""Events in one `POST /runs/{id}/events` (more: 422 naming the list)."""
MAX_EVENT_BYTES = 1024 * 1024
"""One reported event as compact JSON (more: 413 naming the event)."""
MAX_EVENTS_BODY_BYTES = 4 * 1024 * 1024
"""One `POST /runs/{id}/events` body (more: 413, refused before the body is read)."""
LOG_CHUNK_BYTES = 64 * 1024
"""A log text longer than this (UTF-8) is recorded as several log events, cut at newlines."""
APPEND_TARGET_BYTES = 256 * 1024
"""What one append (one transaction under the log's lock) writes at most, about."""
EVENT_OVERHEAD_BYTES = 256
"""An event's encoded envelope (ids, topic, timestamps) beside its text, about."""


def split_log(text: str, limit: int = LOG_CHUNK_BYTES) -> list[str]:
    """`text` in pieces of at most `limit` UTF-8 bytes: cut at newlines (dropped, as between
    log events), and a line longer than `limit` cut at a character boundary."""
    data = text.encode()
    if len(data) <= limit:
        return [text]
    pieces: list[str] = []
    current: list[bytes] = []
    size = -1  # the first line needs no separator
    for line in data.split(b"\n"):
        if size >= 0 and size + 1 + len(line) <= limit:
            current.append(line)
            size += 1 + len(line)
            continue
        if current:
            pieces.append(b"\n".join(current).decode())
        current, size = [], -1
        while len(line) > limit:
            cut = _char_boundary(line, limit)
            pieces.append(line[:cut].decode())
            line = line[cut:]
        current, size = [line], len(line)
    pieces.append(b"\n".join(current).decode())
    return pieces


def _char_boundary(data: bytes, limit: int) -> int:
    """The largest cut ≤ `limit` that does not split a UTF-8 character."""
    cut = limit
    while cut > 0 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut


def in_appends(items: Iterable[T], size: Callable[[T], int],
               target: int = APPEND_TARGET_BYTES) -> Iterator[list[T]]:
    """`items` in order, grouped so each group's size stays within `target` (an item larger
    than `target` goes alone)."""
    group: list[T] = []
    total = 0
    for item in items:
        n = size(item) + EVENT_OVERHEAD_BYTES
        if group and total + n > target:
            yield group
            group, total = [], 0
        group.append(item)
        total += n
    if group:
        yield group
