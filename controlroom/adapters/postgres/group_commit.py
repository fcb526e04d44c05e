"""Group commit: concurrent appends from several threads go to the log in one shared append.

Every append takes the log's exclusive lock and commits (a WAL flush), so with many writers the
lock and the flushes, not the work, set the pace. Here the thread that finds no append in flight
leads: it appends everything queued so far (its own items first, then those that arrived while
the previous append was in flight) in one call, hands each member its own positions, and passes
the lead to the first thread still waiting. A lone writer appends at once, as before; under load
groups form by themselves, without a timer.

Each member keeps its own answer. A group refused for a conflict (another writer already holds
one of its stream versions) is appended again member by member, so that only the member in
conflict gets the conflict. Any other failure (lock timeout, database away) is every member's,
since nothing of the group was written.
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class _Member(Generic[T]):
    """One caller's items and, once appended, its positions or its error."""

    __slots__ = ("done", "error", "items", "leads", "positions", "size", "wake")

    def __init__(self, items: Sequence[T], size: int) -> None:
        self.items = items
        self.size = size
        self.positions: list[int] | None = None
        self.error: BaseException | None = None
        self.done = False
        self.leads = False
        self.wake = threading.Event()


class GroupCommit(Generic[T]):
    """Appends the items of concurrent callers together, each caller getting its own positions.

    `append(items)` must write all of `items` in one statement (all or nothing) and return their
    positions in order. A group holds at most `max_bytes` (by `size`) and `max_items` items, unless
    one member alone is larger, which then goes alone.
    """

    def __init__(
        self, append: Callable[[Sequence[T]], list[int]], *, size: Callable[[T], int],
        max_bytes: int, max_items: int, is_conflict: Callable[[BaseException], bool],
    ) -> None:
        self._append = append
        self._size = size
        self._max_bytes = max_bytes
        self._max_items = max_items
        self._is_conflict = is_conflict
        self._mutex = threading.Lock()
        self._queue: deque[_Member[T]] = deque()
        self._leading = False
        """True while some thread leads; then every newcomer queues and waits."""

    @property
    def waiting(self) -> int:
        """Callers queued for the next append (for metrics, and tests)."""
        with self._mutex:
            return len(self._queue)

    def append(self, items: Sequence[T]) -> list[int]:
        """Append `items` (contiguously, in order), alone or with others': their positions."""
        member = _Member(items, sum(self._size(item) for item in items))
        with self._mutex:
            self._queue.append(member)
            member.leads = not self._leading
            self._leading = True
        if not member.leads:
            member.wake.wait()  # woken when appended, or handed the lead
        if not member.done:
            self._lead()
        if member.error is not None:
            raise member.error
        assert member.positions is not None
        return member.positions

    def _lead(self) -> None:
        """Append one group, starting with our own member (the first queued), then pass on."""
        try:
            with self._mutex:
                group = self._take()
            self._commit(group)
        finally:
            with self._mutex:
                if self._queue:
                    nxt = self._queue[0]
                    nxt.leads = True
                    nxt.wake.set()
                else:
                    self._leading = False

    def _take(self) -> list[_Member[T]]:
        """The longest run of queued members, in arrival order, within the group's limits."""
        group = [self._queue.popleft()]
        size, count = group[0].size, len(group[0].items)
        while self._queue:
            nxt = self._queue[0]
            if size + nxt.size > self._max_bytes or count + len(nxt.items) > self._max_items:
                break
            group.append(self._queue.popleft())
            size += nxt.size
            count += len(nxt.items)
        return group

    def _commit(self, group: list[_Member[T]]) -> None:
        try:
            if len(group) == 1:
                self._one(group[0])
                return
            try:
                items = [item for m in group for item in m.items]
                positions = self._append(items)
                if len(positions) != len(items):
                    raise RuntimeError(f"{len(items)} items appended, {len(positions)} positions")
            except Exception as e:
                if not self._is_conflict(e):
                    for m in group:  # nothing was written: the failure is everyone's
                        m.error = _own(e)
                    return
                for m in group:  # only the member in conflict must get the conflict
                    self._one(m)
                return
            start = 0
            for m in group:
                m.positions = positions[start:start + len(m.items)]
                start += len(m.items)
        except BaseException as e:  # never leave a follower waiting for ever
            for m in group:
                if m.positions is None and m.error is None:
                    m.error = e
            raise
        finally:
            for m in group:
                m.done = True
                m.wake.set()

    def _one(self, member: _Member[T]) -> None:
        try:
            member.positions = self._append(member.items)
        except Exception as e:
            member.error = e


def _own(error: BaseException) -> BaseException:
    """A copy of a shared error for one caller (one object raised in several threads would
    collect all their tracebacks), with the same cause; the original if it can't be copied."""
    try:
        mine = copy.copy(error)
    except Exception:
        return error
    if mine is error or type(mine) is not type(error):
        return error
    mine.__cause__ = error.__cause__
    mine.__traceback__ = None
    return mine
