"""Unit tests of ``_history`` (in memory): the window stops reading, and the edges of runs_out_at.

The sandbox tests (tests/test_estimates.py, tests/integration/test_integration_hook_planning.py)
prove the same through real pages; these pin single branches.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pendulum
import pytest

from airflow_provider_localleads.models import CreditBalance, CreditTransaction, CreditUsage
from airflow_provider_localleads.planning.usage import recent_deductions, summarize_usage, utc_moment, validate_days

NOW = pendulum.datetime(2026, 9, 10, 12, tz="UTC")


def txn(n: int, type: str, amount: int, days_ago: float) -> CreditTransaction:
    return CreditTransaction(f"txn_{n}", type, amount, "Lead search: x", NOW - timedelta(days=days_ago))


def balance(available: int, last_reset: str = "2026-08-15T00:00:00Z", reset_day: int = 15) -> CreditBalance:
    return CreditBalance(100, 0, 100 - available, available, reset_day, pendulum.parse(last_reset))


def test_recent_deductions_stops_at_the_first_older_transaction() -> None:
    read: list[str] = []

    def history() -> Iterator[CreditTransaction]:
        for t in (txn(1, "DEDUCTION", -5, 1), txn(2, "TOP_UP", 9, 2), txn(3, "DEDUCTION", -7, 3), txn(4, "X", 1, 4)):
            read.append(t.id)
            yield t
        raise AssertionError("read past the window")

    assert [t.id for t in recent_deductions(history(), NOW - timedelta(days=3.5))] == ["txn_1", "txn_3"]
    assert read == ["txn_1", "txn_2", "txn_3", "txn_4"]  # the first older one ends it


def test_runs_out_exactly_at_the_reset_counts_as_lasting() -> None:
    # 45 available at 10/day: 4.5 days = 2026-09-15T00:00, the reset itself.
    usage = summarize_usage(balance(45), [txn(1, "DEDUCTION", -300, 1)], 30, NOW)
    assert usage.runs_out_at is None
    just_before = summarize_usage(balance(44), [txn(1, "DEDUCTION", -300, 1)], 30, NOW)
    assert just_before.runs_out_at == NOW + timedelta(days=4.4)


def test_a_positive_deduction_counts_by_its_size() -> None:
    usage = summarize_usage(balance(50), [txn(1, "DEDUCTION", 6, 1), txn(2, "DEDUCTION", -4, 2)], 10, NOW)
    assert (usage.spent, usage.deductions, usage.per_day) == (10, 2, 1.0)


def test_summary_shows_a_small_rate_with_two_significant_digits() -> None:
    usage = summarize_usage(balance(50), [txn(1, "DEDUCTION", -1, 1)], 30, NOW)
    assert usage.per_day == pytest.approx(1 / 30)
    assert (
        usage.summary() == "at the last 30 days' rate (0.033/day) these 50 credits last until the reset on 2026-09-15"
    )


def test_summary_of_a_usage_built_by_hand() -> None:
    usage = CreditUsage(
        spent=369,
        per_day=12.3,
        deductions=30,
        since=pendulum.datetime(2026, 11, 1, tz="UTC"),
        next_reset_at=pendulum.datetime(2026, 12, 15, tz="UTC"),
        runs_out_at=pendulum.datetime(2026, 12, 8, 6, tz="UTC"),
        days=30,
        available_credits=82,
    )
    assert usage.summary() == (
        "at the last 30 days' rate (12.3/day) these 82 credits last until 2026-12-08, 6 days before the reset on "
        "2026-12-15"
    )


@pytest.mark.parametrize("days", [0, -3, True, 2.0, "7", None])
def test_validate_days_refuses_what_is_not_a_whole_number_of_days(days: object) -> None:
    with pytest.raises(ValueError, match=r"days must be a whole number of days >= 1, got"):
        validate_days(days)


def test_utc_moment_converts_to_utc_and_refuses_naive_times() -> None:
    moment = utc_moment(pendulum.datetime(2026, 9, 10, 14, tz="Europe/Berlin"))
    assert moment == NOW
    assert moment.utcoffset() == timedelta(0)
    assert isinstance(moment, pendulum.DateTime)
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        utc_moment(NOW.naive())
