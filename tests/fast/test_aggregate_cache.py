"""The runs a process keeps for writes are bounded by their code's size, not only their number:
one tenant submitting big code cannot fill the process's memory."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from controlroom.commands.aggregate_cache import SizedCache, held_bytes
from controlroom.commands.application import ControlRoom
from tests.fast.memory import POPO


def run_with(code_bytes: int) -> SimpleNamespace:
    return SimpleNamespace(code={"main.py": "x" * code_bytes})


def test_big_runs_push_the_oldest_out_so_the_code_held_stays_under_the_bound() -> None:
    cache = SizedCache(maxsize=100, max_bytes=10_000)
    keys = [uuid.uuid4() for _ in range(10)]
    for key in keys:
        cache.put(key, run_with(3_000))
    entries, held = cache.held
    assert held <= 10_000 and entries == 3
    assert cache.get(keys[-1]).code["main.py"] == "x" * 3_000
    for old in keys[:7]:
        try:
            cache.get(old)
        except KeyError:
            continue
        raise AssertionError("an old run was kept past the bound")


def test_a_run_bigger_than_the_whole_bound_is_never_kept() -> None:
    cache = SizedCache(maxsize=100, max_bytes=10_000)
    small, huge = uuid.uuid4(), uuid.uuid4()
    cache.put(small, run_with(10))
    cache.put(huge, run_with(20_000))
    assert cache.held == (1, held_bytes(run_with(10)))
    assert cache.get(small) is not None


def test_the_count_still_bounds_and_the_least_recently_used_goes_first() -> None:
    cache = SizedCache(maxsize=2)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(a, run_with(1))
    cache.put(b, run_with(1))
    cache.get(a)  # a is now the most recently used
    cache.put(c, run_with(1))
    assert cache.get(a) and cache.get(c)
    assert cache.held[0] == 2
    try:
        cache.get(b)
    except KeyError:
        return
    raise AssertionError("the least recently used run was kept")


def test_a_process_with_a_run_cache_uses_the_sized_one() -> None:
    app = ControlRoom(env={**POPO, "AGGREGATE_CACHE_MAXSIZE": "8"})
    assert isinstance(app.repository.cache, SizedCache)
    assert ControlRoom(env=POPO).repository.cache is None
