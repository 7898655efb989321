"""Checks and timestamps shared by the sandbox (``sandbox/values.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from airflow_provider_localleads.sandbox import SandboxState
from airflow_provider_localleads.sandbox.values import most_recent_reset


@pytest.mark.parametrize(
    ("now", "reset_day", "expected"),
    [
        (datetime(2026, 5, 20, 12, tzinfo=UTC), 1, datetime(2026, 5, 1, tzinfo=UTC)),
        (datetime(2026, 5, 20, 12, tzinfo=UTC), 25, datetime(2026, 4, 25, tzinfo=UTC)),
        (datetime(2026, 5, 20, 0, tzinfo=UTC), 20, datetime(2026, 5, 20, tzinfo=UTC)),  # at, not before
        (datetime(2026, 2, 15, tzinfo=UTC), 31, datetime(2026, 1, 31, tzinfo=UTC)),
        (datetime(2026, 3, 1, tzinfo=UTC), 31, datetime(2026, 2, 28, tzinfo=UTC)),  # clamped
        (datetime(2028, 2, 29, 8, tzinfo=UTC), 30, datetime(2028, 2, 29, tzinfo=UTC)),  # leap year
        (datetime(2026, 1, 10, tzinfo=UTC), 15, datetime(2025, 12, 15, tzinfo=UTC)),  # across the year
    ],
)
def test_last_reset_is_the_latest_anniversary(now, reset_day, expected):
    assert most_recent_reset(now, reset_day) == expected
    assert SandboxState(reset_day=reset_day, clock=lambda: now).last_reset_at == expected
