"""What the credits page shows for one connection, read through the hook and cached in the process.

The page may be loaded by many people at once and reloaded often, but credits change slowly and every
answer is a request to a paid API: the balance is reused for 60 s and the history (the usage forecast,
the last 30 days, the latest transactions) for 5 min, per connection, in the serving process. Any
number of page loads then make at most one balance request a minute.

The result is plain JSON (``credits_json``): the page, the JSON route and the Airflow 2.11 view all
render from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from airflow_provider_localleads.client.pagination import MAX_PAGE_SIZE
from airflow_provider_localleads.client.values import iso_z
from airflow_provider_localleads.exceptions import LocalLeadsConfigurationError
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.models import CreditBalance, CreditTransaction, CreditUsage
from airflow_provider_localleads.ui.cache import Clock, TTLCache, utc_now

__all__ = [
    "BALANCE_TTL",
    "HISTORY_TTL",
    "LATEST",
    "WINDOW_DAYS",
    "CreditsData",
    "History",
    "by_kind",
    "credits_json",
    "daily",
    "kind_of",
    "read_history",
    "require_localleads",
]

WINDOW_DAYS = 30
LATEST = 20
BALANCE_TTL = 60.0
HISTORY_TTL = 300.0
#: The transaction type that spends credits (the API's own name).
DEDUCTION = "DEDUCTION"


@dataclass(frozen=True, slots=True)
class History:
    """What the page shows of one connection's recent history (only the derived figures are kept: a busy
    month's transactions would cost ~100 KiB per cached connection)."""

    usage: CreditUsage
    #: ``{date, spent, added}`` for each of the last ``WINDOW_DAYS`` days, oldest first.
    daily: tuple[dict[str, Any], ...]
    #: Credits spent per kind over the usage's window, largest first.
    by_kind: dict[str, int]
    #: The newest ``LATEST`` transactions (older than the window when it holds fewer).
    latest: tuple[CreditTransaction, ...]


class _PageHook(LocalLeadsHook):
    """A hook whose ``get_usage`` works from what the page has already read.

    ``get_usage`` reads the balance through ``get_balance`` and the history through
    ``iter_transactions``. The page has just read both (the balance is cached, the history walked
    once for the days, the kinds and the latest transactions), so ``get_balance`` answers with that
    balance and ``iter_transactions``, once ``replay`` is set, with those transactions: the forecast
    costs no request of its own. Were ``get_usage`` to read otherwise, it would only cost requests.
    """

    def __init__(self, conn_id: str, balance: CreditBalance) -> None:
        super().__init__(conn_id)
        self.known_balance = balance
        self.replay: list[CreditTransaction] | None = None

    def get_balance(self) -> CreditBalance:
        return self.known_balance

    def iter_transactions(self, page_size: int = MAX_PAGE_SIZE) -> Iterator[CreditTransaction]:
        if self.replay is None:
            yield from super().iter_transactions(page_size)
        else:
            yield from self.replay


def require_localleads(hook: LocalLeadsHook) -> None:
    """Refuse a connection of another type: the page must not send its password to its host as an API key.

    The page takes any connection id the user may read, so a Postgres or HTTP connection's secret
    would otherwise leave with the first request.
    """
    conn_id = hook.localleads_conn_id
    conn_type = hook.get_connection(conn_id).conn_type
    if conn_type != LocalLeadsHook.conn_type:
        raise LocalLeadsConfigurationError(
            f"Connection {conn_id!r} is of type {conn_type!r}, not {LocalLeadsHook.conn_type!r}: the credits page "
            "reads only LocalLeads connections. Pick one of those"
        )


def read_history(conn_id: str, balance: CreditBalance, until: datetime) -> History:
    """Usage over the last ``WINDOW_DAYS`` days, the days, the kinds and the latest transactions, from one
    pass over the history, newest first, stopping at the first transaction older than the window once
    the ``LATEST`` newest are in hand."""
    since = until - timedelta(days=WINDOW_DAYS)
    hook = _PageHook(conn_id, balance)
    with hook:
        require_localleads(hook)
        read: list[CreditTransaction] = []
        for txn in hook.iter_transactions():
            read.append(txn)
            if txn.created_at < since and len(read) >= LATEST:
                break
        hook.replay = read
        usage = hook.get_usage(WINDOW_DAYS, now=until)
    window = [txn for txn in read if txn.created_at >= since]
    return History(usage=usage, daily=tuple(daily(window, until)), by_kind=by_kind(window), latest=tuple(read[:LATEST]))


def kind_of(description: str) -> str:
    """The kind of a spend: its description before the first ``:`` ("Lead search: cafes" -> "Lead search")."""
    return description.split(":", 1)[0].strip() or "(no description)"


def by_kind(transactions: Iterable[CreditTransaction]) -> dict[str, int]:
    """Credits spent per kind, largest first (ties by name)."""
    totals: dict[str, int] = {}
    for txn in transactions:
        if txn.type == DEDUCTION:
            kind = kind_of(txn.description)
            totals[kind] = totals.get(kind, 0) + abs(txn.amount)
    return dict(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


def daily(transactions: Iterable[CreditTransaction], until: datetime, days: int = WINDOW_DAYS) -> list[dict[str, Any]]:
    """Credits spent and added on each of the ``days`` calendar days (UTC) up to ``until``'s, oldest first.

    Spent: deductions. Added: every positive amount (top-ups, monthly resets).
    """
    last = until.date()
    first = last - timedelta(days=days - 1)
    spent: dict[date, int] = {}
    added: dict[date, int] = {}
    for txn in transactions:
        day = txn.created_at.date()
        if not first <= day <= last:
            continue
        if txn.type == DEDUCTION:
            spent[day] = spent.get(day, 0) + abs(txn.amount)
        elif txn.amount > 0:
            added[day] = added.get(day, 0) + txn.amount
    return [
        {"date": day.isoformat(), "spent": spent.get(day, 0), "added": added.get(day, 0)}
        for day in (first + timedelta(days=i) for i in range(days))
    ]


def credits_json(conn_id: str, balance: CreditBalance, history: History, fetched_at: datetime) -> dict[str, Any]:
    """The JSON of ``GET /localleads/api/connections/{connection_id}/credits`` (and what the page renders)."""
    return {
        "conn_id": conn_id,
        "balance": balance.to_dict(),
        "usage": history.usage.to_dict(),
        "daily": [dict(day) for day in history.daily],
        "by_kind": dict(history.by_kind),
        "transactions": [txn.to_dict() for txn in history.latest],
        "fetched_at": iso_z(fetched_at),
    }


class CreditsData:
    """The credits of any connection, cached per connection id in this process.

    :param clock: the current time (aware); the window ends there and the caches age by it.
    :param balance_ttl: seconds a balance is reused.
    :param history_ttl: seconds a history (usage, days, kinds, latest transactions) is reused.
    """

    def __init__(
        self, *, clock: Clock = utc_now, balance_ttl: float = BALANCE_TTL, history_ttl: float = HISTORY_TTL
    ) -> None:
        self._clock = clock
        self._balances: TTLCache[CreditBalance] = TTLCache(balance_ttl, clock)
        self._histories: TTLCache[History] = TTLCache(history_ttl, clock)

    def credits(self, conn_id: str) -> dict[str, Any]:
        """The page's data for ``conn_id`` (see ``credits_json``); the hook's errors propagate."""
        balance = self._balances.get(conn_id, lambda: _read_balance(conn_id))
        history = self._histories.get(conn_id, lambda: read_history(conn_id, balance.value, self._clock()))
        return credits_json(conn_id, balance.value, history.value, min(balance.loaded_at, history.loaded_at))

    def clear(self) -> None:
        """Forget every cached answer."""
        self._balances.clear()
        self._histories.clear()


def _read_balance(conn_id: str) -> CreditBalance:
    with LocalLeadsHook(conn_id) as hook:
        require_localleads(hook)
        return hook.get_balance()
