"""The aggregates a process keeps in memory for writes, bounded by their size as well as their
number: a run carries its code, so a count alone would let one tenant's big submissions fill
the process's memory."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any
from uuid import UUID

import msgspec

MAX_CACHED_BYTES = 64 * 1024 * 1024
"""The code all cached runs may hold together; a run bigger than this is never kept."""


def held_bytes(aggregate: Any) -> int:
    """About what keeping `aggregate` costs: its code, if it has any (the rest is small)."""
    code = getattr(aggregate, "code", None)
    return len(msgspec.json.encode(code)) if code else 0


class SizedCache:
    """A least-recently-used cache of aggregates, for the library's repository (`get`, `put`).

    At most `maxsize` entries and `max_bytes` of code; the oldest go first. A copy is put after
    every save, so an entry's size is measured once, when its aggregate first comes in (code
    never changes after submission).
    """

    def __init__(self, maxsize: int, max_bytes: int = MAX_CACHED_BYTES) -> None:
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        self._items: OrderedDict[UUID, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: UUID, evict: bool = False) -> Any:
        """The cached aggregate (KeyError if none), now the most recently used."""
        with self._lock:
            value, size = self._items[key]
            if evict:
                del self._items[key]
                self._bytes -= size
            else:
                self._items.move_to_end(key)
            return value

    def put(self, key: UUID, value: Any) -> None:
        """Keep `value` as the latest of `key`, making room by dropping the oldest."""
        if value is None:
            return
        with self._lock:
            known = self._items.get(key)
        size = known[1] if known is not None else held_bytes(value)
        if size > self._max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while len(self._items) > self._maxsize or self._bytes > self._max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    @property
    def held(self) -> tuple[int, int]:
        """(entries, bytes of code) held now."""
        with self._lock:
            return len(self._items), self._bytes
