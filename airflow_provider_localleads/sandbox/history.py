"""The organisation's transaction history: its entries, their order, paging, and the seed.

Why a seed at all: a client's pagination, parsing and reporting only get exercised by a history, so
a fresh sandbox has a short plausible one (consistent with its balance), or N synthetic entries for
pagination tests and benchmarks. Guarded by the organisation's lock (``state.SandboxState``), so a
spend changes the balance and the history in one step.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from airflow_provider_localleads.sandbox.values import check_int, format_timestamp, to_millis

__all__ = ["TRANSACTION_TYPES", "History", "Transaction", "plausible_history", "synthetic_history"]

TRANSACTION_TYPES: Final = frozenset({"DEDUCTION", "MONTHLY_RESET", "TOP_UP"})


@dataclass(frozen=True, slots=True)
class Transaction:
    """One history entry. Stored as a compact object and turned into JSON only when a page is served,
    so a history of 100,000 entries costs one list, not 100,000 pre-rendered strings."""

    id: str
    type: str
    amount: int
    description: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The API's wire form (camelCase, ``createdAt`` as ``...000Z``)."""
        return {
            "id": self.id,
            "type": self.type,
            "amount": self.amount,
            "description": self.description,
            "createdAt": format_timestamp(self.created_at),
        }


_SEED_COSTS: Final = (12, 8, 15, 5, 10, 3, 20, 6)
_SEED_SEARCHES: Final = (
    "Dentists in Austin, TX",
    "Plumbers in Denver, CO",
    "Florists in Portland, OR",
    "Roofers in Tampa, FL",
    "Bakeries in Madison, WI",
    "Chiropractors in Boise, ID",
    "Landscapers in Raleigh, NC",
    "Veterinarians in Tucson, AZ",
)
_MAX_SEED_DEDUCTIONS: Final = 50


def _seed_description(index: int, cost: int) -> str:
    """Plausible wording, alternating searches and enrichments (12 credits ~ 97 results, 8 ~ 40 contacts)."""
    if index % 2 == 0:
        place = _SEED_SEARCHES[(index // 2) % len(_SEED_SEARCHES)]
        return f"Lead search: {place} ({cost * 8 + 1} results)"
    return f"Email enrichment: {cost * 5} contacts"


def plausible_history(
    monthly: int, bonus: int, used: int, start: datetime, now: datetime
) -> list[tuple[str, int, str, datetime]]:
    """(type, amount, description, created_at) in the order to record them: the month's reset at
    ``start``, a coupon top-up of ``bonus``, and at most 50 deductions summing to ``used``, spread
    evenly between ``start`` and ``now``."""
    history: list[tuple[str, int, str, datetime]] = [("MONTHLY_RESET", monthly, "Monthly credit reset", start)]
    costs: list[int] = []
    left = used
    while left > 0:
        cost = left if len(costs) == _MAX_SEED_DEDUCTIONS - 1 else min(left, _SEED_COSTS[len(costs) % 8])
        costs.append(cost)
        left -= cost
    entries: list[tuple[str, int, str]] = []
    if bonus:
        entries.append(("TOP_UP", bonus, "Coupon WELCOME: bonus credits"))
    entries += [("DEDUCTION", -cost, _seed_description(i, cost)) for i, cost in enumerate(costs)]
    span = max(now - start, timedelta(0))
    for i, (type_, amount, description) in enumerate(entries, start=1):
        history.append((type_, amount, description, to_millis(start + span * i / (len(entries) + 1))))
    return history


def synthetic_history(count: int, now: datetime, monthly: int, new_id: Callable[[], str]) -> list[Transaction]:
    """``count`` entries, oldest first, one a minute back from ``now``: a ``MONTHLY_RESET`` every 500th,
    deductions otherwise. Built in one pass, already sorted (100,000 in well under a second)."""
    first = now - timedelta(minutes=count - 1)
    minute = timedelta(minutes=1)
    txns: list[Transaction] = []
    for i in range(count):
        if i % 500 == 0:
            txn = Transaction(new_id(), "MONTHLY_RESET", monthly, "Monthly credit reset", first + minute * i)
        else:
            cost = _SEED_COSTS[i % 8]
            txn = Transaction(new_id(), "DEDUCTION", -cost, _seed_description(i, cost), first + minute * i)
        txns.append(txn)
    return txns


class History:
    """Transactions oldest first, ordered by ``created_at`` (ties keep insertion order): appending is
    O(1) and a newest-first page is a reversed slice from the end."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._items: list[Transaction] = []
        self._next_id = 1

    def _new_id(self) -> str:
        txn_id = f"txn_{self._next_id:06d}"
        self._next_id += 1
        return txn_id

    def seed(self, count: int | None, monthly: int, bonus: int, used: int, start: datetime, now: datetime) -> None:
        """The history a new organisation starts with: plausible (``count`` ``None``) or synthetic."""
        if count is None:
            for entry in plausible_history(monthly, bonus, used, start, now):
                self.record(*entry)
        else:
            self._items = synthetic_history(
                check_int("seed_transactions", count, minimum=0), now, monthly, self._new_id
            )

    def record(self, type_: str, amount: int, description: str, created_at: datetime) -> Transaction:
        with self._lock:
            txn = Transaction(self._new_id(), type_, amount, description, created_at)
            if not self._items or self._items[-1].created_at <= txn.created_at:
                self._items.append(txn)
            else:
                index = bisect.bisect_right(self._items, txn.created_at, key=lambda t: t.created_at)
                self._items.insert(index, txn)
            return txn

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """One newest-first page in API form, plus the total; an offset past the end gives ``[]``."""
        limit = check_int("limit", limit, minimum=1)
        offset = check_int("offset", offset, minimum=0)
        with self._lock:
            total = len(self._items)
            stop = total - offset
            if stop <= 0:
                return [], total
            start = max(0, stop - limit)
            page = self._items[start:stop]
        return [txn.to_json() for txn in reversed(page)], total

    def all(self) -> list[dict[str, Any]]:
        """The whole history, newest first, in API form (O(n))."""
        with self._lock:
            snapshot = list(self._items)
        return [txn.to_json() for txn in reversed(snapshot)]

    def delete(self, transaction_id: str) -> dict[str, Any]:
        """Remove one entry; ``KeyError`` if absent."""
        with self._lock:
            for index in range(len(self._items) - 1, -1, -1):
                if self._items[index].id == transaction_id:
                    return self._items.pop(index).to_json()
        raise KeyError(f"no transaction with id {transaction_id!r}")
