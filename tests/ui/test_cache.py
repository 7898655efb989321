"""TTLCache: one load per key however many threads ask, failures not kept, the clock injected."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from ui_support import NOW, Clock

from airflow_provider_localleads.ui.cache import TTLCache


def test_a_value_is_reused_until_its_ttl_then_loaded_again() -> None:
    clock = Clock()
    cache: TTLCache[int] = TTLCache(60, clock)
    loads: list[int] = []

    def load() -> int:
        loads.append(1)
        return len(loads)

    assert cache.get("a", load).value == 1
    clock.now = NOW + timedelta(seconds=59.9)
    assert cache.get("a", load).value == 1
    clock.now = NOW + timedelta(seconds=60)
    entry = cache.get("a", load)
    assert (entry.value, entry.loaded_at) == (2, NOW + timedelta(seconds=60))


def test_a_clock_that_goes_back_expires_the_value() -> None:
    clock = Clock()
    cache: TTLCache[str] = TTLCache(60, clock)
    cache.get("a", lambda: "old")
    clock.now = NOW - timedelta(seconds=1)
    assert cache.get("a", lambda: "new").value == "new"


def test_concurrent_requests_for_one_key_load_once() -> None:
    cache: TTLCache[int] = TTLCache(60)
    calls: list[int] = []
    barrier = threading.Barrier(8)

    def slow_load() -> int:
        calls.append(1)
        time.sleep(0.2)
        return 7

    results: list[int] = []

    def ask() -> None:
        barrier.wait()
        results.append(cache.get("k", slow_load).value)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [7] * 8
    assert len(calls) == 1


def test_a_failed_load_is_not_kept() -> None:
    cache: TTLCache[int] = TTLCache(60)

    def fail() -> int:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        cache.get("k", fail)
    assert cache.get("k", lambda: 3).value == 3


def test_keys_are_separate_and_clear_forgets() -> None:
    cache: TTLCache[str] = TTLCache(60)
    assert cache.get("a", lambda: "A").value == "A"
    assert cache.get("b", lambda: "B").value == "B"
    cache.clear()
    assert cache.get("a", lambda: "A2").value == "A2"


@pytest.mark.parametrize("ttl", [0, -1])
def test_the_ttl_must_be_positive(ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl must be a positive number of seconds"):
        TTLCache(ttl)
