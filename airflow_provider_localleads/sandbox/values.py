"""Checking and formatting the values the sandbox's controls take: numbers, strings and timestamps.

Shared by the state and the faults so every refusal reads the same and names the field: an admin
``400`` carries the message as is, so it has to tell the caller what to fix.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

__all__ = [
    "check_int",
    "check_str",
    "check_times",
    "format_timestamp",
    "most_recent_reset",
    "parse_timestamp",
    "to_millis",
    "utc_now",
]


def check_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    # bool is an int subclass; True as "1 credit" is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def check_times(times: object) -> int | None:
    """How many requests a fault lasts: a whole number >= 1, or ``None`` for "until cleared"."""
    if times is None:
        return None
    return check_int("times", times, minimum=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_millis(value: datetime) -> datetime:
    """UTC, truncated to whole milliseconds: the API's timestamps carry milliseconds and no more, so the
    sandbox never holds a time it could not have sent."""
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def format_timestamp(value: datetime) -> str:
    """Format like the API (JavaScript's ``toISOString``): ``2026-05-01T00:00:00.000Z``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_timestamp(value: object, name: str) -> datetime:
    """Accept an aware ``datetime`` or an ISO-8601 string with an offset (``...Z`` included).

    Naive values are refused rather than silently taken as UTC or local time: a test that means
    "midnight on the 1st" should say which midnight, and a wrong guess here would shift every date
    the provider computes from it.
    """
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name} must be an ISO-8601 timestamp, got {value!r}") from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise ValueError(f"{name} must be a datetime or an ISO-8601 string, got {value!r}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{name} must include a timezone (e.g. 2026-05-01T00:00:00Z), got {value!r}")
    return to_millis(parsed)


def most_recent_reset(now: datetime, reset_day: int) -> datetime:
    """The latest billing anniversary at 00:00 UTC at or before ``now``.

    ``reset_day`` beyond a month's length is clamped to that month's last day (a ``31`` resets on
    28/29 February), which is how a monthly billing anniversary behaves.
    """
    check_int("reset_day", reset_day, minimum=1, maximum=31)
    now = now.astimezone(UTC)
    year, month = now.year, now.month
    for _ in range(2):
        day = min(reset_day, calendar.monthrange(year, month)[1])
        candidate = datetime(year, month, day, tzinfo=UTC)
        if candidate <= now:
            return candidate
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    raise AssertionError("unreachable: last month's anniversary is always in the past")  # pragma: no cover
