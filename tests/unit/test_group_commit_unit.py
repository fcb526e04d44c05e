"""Group commit: concurrent callers share appends, each keeping its own positions and answer."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from controlroom.adapters.postgres.group_commit import GroupCommit


class Conflict(Exception):
    """A key is in the log already."""


class Log:
    """An append-only log of unique keys; an append is all or nothing. The first append can be
    held until released, so that others queue behind it and form a group."""

    def __init__(self, *, hold_first: bool = False) -> None:
        self.keys: list[str] = []
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.failures: dict[int, Exception] = {}
        """Call number (from 1) → what it raises instead of appending."""

    def append(self, items: Sequence[str]) -> list[int]:
        first = not self.calls
        self.calls.append(list(items))
        if first:
            self.entered.set()
            assert self.release.wait(10)
        if error := self.failures.get(len(self.calls)):
            raise error
        if len(set(items)) < len(items) or set(items) & set(self.keys):
            raise Conflict("key exists")
        start = len(self.keys)
        self.keys += items
        return list(range(start + 1, start + 1 + len(items)))


def committer(log: Log, *, max_bytes: int = 1000, max_items: int = 1000) -> GroupCommit[str]:
    return GroupCommit(log.append, size=len, max_bytes=max_bytes, max_items=max_items,
                       is_conflict=lambda e: isinstance(e, Conflict))


def queue_behind_first(gc: GroupCommit[str], log: Log, batches: list[list[str]]
                       ) -> dict[int, list[int] | BaseException]:
    """Append batches[0] (held in the log), then the others while it is held; release; answers."""
    answers: dict[int, list[int] | BaseException] = {}

    def call(i: int) -> None:
        try:
            answers[i] = gc.append(batches[i])
        except Exception as e:
            answers[i] = e

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert log.entered.wait(10)
    others = []
    for i in range(1, len(batches)):  # one at a time, so the queue keeps their order
        t = threading.Thread(target=call, args=(i,))
        t.start()
        others.append(t)
        while gc.waiting < i:
            threading.Event().wait(0.001)
    log.release.set()
    for t in [first, *others]:
        t.join(10)
    return answers


def test_a_lone_caller_appends_at_once() -> None:
    log = Log()
    assert committer(log).append(["a", "b"]) == [1, 2]
    assert log.calls == [["a", "b"]]


def test_callers_arriving_during_an_append_share_the_next_one_each_with_its_positions() -> None:
    log = Log(hold_first=True)
    gc = committer(log)
    answers = queue_behind_first(gc, log, [["a"], ["b1", "b2"], ["c"], ["d1", "d2", "d3"]])
    assert log.calls == [["a"], ["b1", "b2", "c", "d1", "d2", "d3"]]
    assert answers == {0: [1], 1: [2, 3], 2: [4], 3: [5, 6, 7]}
    assert gc.waiting == 0


def test_a_conflict_in_a_group_is_only_the_conflicting_callers() -> None:
    log = Log(hold_first=True)
    log.keys = ["taken"]
    gc = committer(log)
    answers = queue_behind_first(gc, log, [["a"], ["b"], ["x", "taken"], ["c"], ["b"]])
    assert answers[0] == [2]
    assert answers[1] == [3]
    assert isinstance(answers[2], Conflict)
    assert answers[3] == [4]
    assert isinstance(answers[4], Conflict)  # the same key as a group-mate: the later one loses
    assert log.keys == ["taken", "a", "b", "c"]
    # The group was tried whole once, then member by member.
    assert log.calls[1] == ["b", "x", "taken", "c", "b"]
    assert log.calls[2:] == [["b"], ["x", "taken"], ["c"], ["b"]]


def test_groups_stay_within_their_limits_in_arrival_order() -> None:
    log = Log(hold_first=True)
    gc = committer(log, max_bytes=6, max_items=3)
    answers = queue_behind_first(gc, log, [["a"], ["bb", "cc"], ["dd"], ["ee"], ["ffffffff"], ["g"]])
    assert log.calls == [["a"], ["bb", "cc", "dd"], ["ee"], ["ffffffff"], ["g"]]
    assert answers == {0: [1], 1: [2, 3], 2: [4], 3: [5], 4: [6], 5: [7]}


def test_any_other_failure_is_every_members_and_the_next_group_goes_on() -> None:
    log = Log(hold_first=True)
    gc = committer(log)
    log.failures = {1: TimeoutError("lock timeout"), 3: OSError("database away")}
    answers = queue_behind_first(gc, log, [["a"], ["b"], ["c"]])
    assert isinstance(answers[0], TimeoutError)  # the first append, alone, failed
    assert answers[1] == [1] and answers[2] == [2]
    with pytest.raises(OSError, match="database away"):
        gc.append(["d"])
    assert gc.append(["d"]) == [3]


def test_a_failed_group_gives_each_member_an_error_of_its_own() -> None:
    log = Log(hold_first=True)
    gc = committer(log)
    log.failures = {2: ConnectionError("gone")}  # the group's append
    answers = queue_behind_first(gc, log, [["a"], ["b"], ["c"]])
    assert answers[0] == [1]
    b, c = answers[1], answers[2]
    assert isinstance(b, ConnectionError) and isinstance(c, ConnectionError)
    assert b is not c and str(b) == str(c) == "gone"
    assert log.keys == ["a"]
