"""The recent end of the credit history: deductions back to a date, and the spending rate they give.

Transactions *newer* than "now" (the API's clock ahead of the worker's) are inside the window: they are
the most recent activity, not the future.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

import pendulum

from airflow_provider_localleads.client.values import python_whole_number
from airflow_provider_localleads.models import CreditBalance, CreditTransaction, CreditUsage

DEDUCTION = "DEDUCTION"


def utc_moment(now: datetime | None, name: str = "now") -> pendulum.DateTime:
    """``now`` (aware) in UTC, or the current time; a naive datetime is refused (its zone is a guess)."""
    if now is None:
        return pendulum.now("UTC")
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (e.g. pendulum.now('UTC')), got {now!r}")
    return pendulum.instance(now).in_timezone("UTC")


def validate_days(days: object) -> int:
    number = python_whole_number(days)
    if number is None or number < 1:
        raise ValueError(f"days must be a whole number of days >= 1, got {days!r}")
    return number


def recent_deductions(transactions: Iterable[CreditTransaction], since: datetime) -> Iterator[CreditTransaction]:
    """The ``DEDUCTION``s of a newest-first history created at or after ``since``; stops at the first older
    transaction of any type, so a paging iterator reads only the pages the window needs."""
    for txn in transactions:
        if txn.created_at < since:
            return
        if txn.type == DEDUCTION:
            yield txn


def summarize_usage(
    balance: CreditBalance, transactions: Iterable[CreditTransaction], days: int, now: pendulum.DateTime
) -> CreditUsage:
    """Spending over the ``days`` before ``now`` and when ``balance`` runs out at that rate.

    ``runs_out_at`` is ``now + available / per_day``; None when that is at or after the next reset
    (the monthly credits come back first) or nothing was spent; ``now`` when nothing is available.
    """
    since = now - timedelta(days=days)
    spent = count = 0
    for txn in recent_deductions(transactions, since):
        spent += abs(txn.amount)
        count += 1
    per_day = spent / days
    available = balance.available_credits
    next_reset = balance.next_reset_at
    runs_out_at: pendulum.DateTime | None
    if available <= 0:
        runs_out_at = now
    elif spent == 0:
        runs_out_at = None
    else:
        runs_out_at = now + timedelta(seconds=available * days * 86_400 / spent)
        if runs_out_at >= next_reset:
            runs_out_at = None
    return CreditUsage(
        spent=spent,
        per_day=per_day,
        deductions=count,
        since=since,
        next_reset_at=next_reset,
        runs_out_at=runs_out_at,
        days=days,
        available_credits=available,
    )
