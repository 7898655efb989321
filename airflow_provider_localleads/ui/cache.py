"""A small per-key cache with a time to live, shared by the threads of one serving process.

Why not ``functools.lru_cache`` or a library: the page needs a time to live per kind of answer
(balance 60 s, history 5 min), one load per key even when many requests arrive at once (each load is
a paid-for API call), failures left uncached (the next page load tries again), and a clock a test can
move. The clock is a constructor argument, so production code carries no test hook.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

__all__ = ["Clock", "Entry", "TTLCache", "utc_now"]

V = TypeVar("V")
#: Returns the current time, aware.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Entry(Generic[V]):
    """A cached value and when it was loaded."""

    value: V
    loaded_at: datetime


class TTLCache(Generic[V]):
    """Values by key, each reused for ``ttl`` seconds after it was loaded.

    :param ttl: seconds a value is served before the next request loads it again.
    :param clock: the current time (aware); a clock that goes back counts as expired.
    """

    def __init__(self, ttl: float, clock: Clock = utc_now) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, Entry[V]] = {}
        self._key_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _fresh(self, key: str, now: datetime) -> Entry[V] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = (now - entry.loaded_at).total_seconds()
        return entry if 0 <= age < self._ttl else None

    def get(self, key: str, load: Callable[[], V]) -> Entry[V]:
        """The fresh entry for ``key``, or one loaded now with ``load()`` (once, however many threads ask).

        An exception from ``load`` reaches its caller and nothing is stored: the next caller loads again.
        """
        with self._lock:
            entry = self._fresh(key, self._clock())
            if entry is not None:
                return entry
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            # Another thread may have loaded it while this one waited.
            with self._lock:
                entry = self._fresh(key, self._clock())
            if entry is not None:
                return entry
            value = load()
            entry = Entry(value, self._clock())
            with self._lock:
                self._entries[key] = entry
            return entry

    def clear(self) -> None:
        """Forget every value (the next request loads again)."""
        with self._lock:
            self._entries.clear()
