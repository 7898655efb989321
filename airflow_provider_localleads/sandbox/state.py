"""The sandbox's in-memory organisation: its credits and history, behind one lock.

Everything a test wants to control or inspect lives here, so the HTTP handler threads, the test thread
and admin requests from other processes all see one consistent organisation. The queued faults
(:mod:`.faults`) and the request log (:mod:`.requestlog`) share that lock. The module knows nothing
about HTTP beyond the API's JSON field names: :mod:`.api` serves it and :mod:`.controls` exposes its
methods to the server, the admin routes and the client.

Only the standard library is imported: the sandbox ships inside the provider and is also loaded as a
pytest plugin, so importing it must stay cheap and must never pull in Airflow.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from airflow_provider_localleads.sandbox.faults import (
    Fault,
    FaultQueue,
    FaultShortcuts,
)
from airflow_provider_localleads.sandbox.history import TRANSACTION_TYPES, History
from airflow_provider_localleads.sandbox.requestlog import DEFAULT_MAX_LOGGED_REQUESTS, RecordedRequest, RequestLog
from airflow_provider_localleads.sandbox.values import (
    check_int,
    check_str,
    format_timestamp,
    most_recent_reset,
    parse_timestamp,
    to_millis,
    utc_now,
)

__all__ = ["InsufficientCredits", "SandboxState"]


class InsufficientCredits(ValueError):
    """Raised by ``spend`` when the organisation has fewer available credits than asked for.

    A ``ValueError`` subclass because it is a refusal of the caller's input, like the real API would
    refuse a search it cannot pay for; the admin HTTP endpoint maps it to ``409 Conflict``.
    """


class SandboxState(FaultShortcuts):
    """One organisation's credits, history, queued faults and request log; thread-safe.

    Every public method takes the same lock, so a test thread, the server's handler threads and admin
    requests can interleave freely and each request sees a consistent snapshot (a page never mixes two
    versions of the history).

    Arguments:
        monthly_credits, bonus_credits, used_credits, reset_day: the initial balance (defaults give the
            documented example: 100 + 25 - 43 = 82 available).
        last_reset_at: defaults to the most recent ``reset_day`` anniversary at 00:00 UTC.
        seed_transactions: ``None`` for a short, plausible history consistent with the balance (a monthly
            reset, a coupon top-up and deductions summing to ``used_credits``); an ``int`` N for exactly
            N synthetic entries, for pagination tests and benchmarks (100,000 builds in well under a
            second).
        clock: returns "now" (aware); replace it to make dates deterministic in tests.
        max_logged_requests: how many request records to keep (oldest dropped first).
    """

    def __init__(
        self,
        monthly_credits: int = 100,
        bonus_credits: int = 25,
        used_credits: int = 43,
        reset_day: int = 1,
        last_reset_at: datetime | str | None = None,
        *,
        seed_transactions: int | None = None,
        clock: Callable[[], datetime] | None = None,
        max_logged_requests: int = DEFAULT_MAX_LOGGED_REQUESTS,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock or utc_now
        self._monthly = check_int("monthly_credits", monthly_credits, minimum=0)
        self._bonus = check_int("bonus_credits", bonus_credits, minimum=0)
        self._used = check_int("used_credits", used_credits, minimum=0)
        self._reset_day = check_int("reset_day", reset_day, minimum=1, maximum=31)
        now = self._now()
        self._last_reset_at = (
            most_recent_reset(now, self._reset_day)
            if last_reset_at is None
            else parse_timestamp(last_reset_at, "last_reset_at")
        )
        self._history = History(self._lock)
        self._faults = FaultQueue(self._lock)
        self._log = RequestLog(self._lock, max_logged_requests)
        self._history.seed(seed_transactions, self._monthly, self._bonus, self._used, self._last_reset_at, now)

    # -- internals ---------------------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("clock must return an aware datetime")
        return to_millis(now)

    # -- balance -----------------------------------------------------------------------------------------

    def balance(self) -> dict[str, Any]:
        """The ``data`` object of ``GET /api/v1/credits/balance``, exactly as served."""
        with self._lock:
            return {
                "monthlyCredits": self._monthly,
                "bonusCredits": self._bonus,
                "usedCredits": self._used,
                "availableCredits": self._monthly + self._bonus - self._used,
                "resetDay": self._reset_day,
                "lastResetAt": format_timestamp(self._last_reset_at),
            }

    @property
    def monthly_credits(self) -> int:
        with self._lock:
            return self._monthly

    @property
    def bonus_credits(self) -> int:
        with self._lock:
            return self._bonus

    @property
    def used_credits(self) -> int:
        with self._lock:
            return self._used

    @property
    def available_credits(self) -> int:
        with self._lock:
            return self._monthly + self._bonus - self._used

    @property
    def reset_day(self) -> int:
        with self._lock:
            return self._reset_day

    @property
    def last_reset_at(self) -> datetime:
        with self._lock:
            return self._last_reset_at

    def set_balance(
        self,
        monthly: int | None = None,
        bonus: int | None = None,
        used: int | None = None,
        reset_day: int | None = None,
        last_reset_at: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Change only the given fields; the history is left alone (this is an adjustment, not an event).

        ``used`` may exceed ``monthly + bonus``: the sandbox then reports a negative
        ``availableCredits``, which a robust client should survive. Changing ``reset_day`` does not move
        ``last_reset_at``; pass both to move the billing cycle. Returns the new balance.
        """
        new_monthly = None if monthly is None else check_int("monthly", monthly, minimum=0)
        new_bonus = None if bonus is None else check_int("bonus", bonus, minimum=0)
        new_used = None if used is None else check_int("used", used, minimum=0)
        new_day = None if reset_day is None else check_int("reset_day", reset_day, minimum=1, maximum=31)
        new_reset = None if last_reset_at is None else parse_timestamp(last_reset_at, "last_reset_at")
        with self._lock:
            if new_monthly is not None:
                self._monthly = new_monthly
            if new_bonus is not None:
                self._bonus = new_bonus
            if new_used is not None:
                self._used = new_used
            if new_day is not None:
                self._reset_day = new_day
            if new_reset is not None:
                self._last_reset_at = new_reset
            return self.balance()

    def spend(self, amount: int, description: str = "Lead search: sandbox") -> dict[str, Any]:
        """Use ``amount`` credits, as a search or enrichment would: ``DEDUCTION`` of ``-amount``.

        Raises ``InsufficientCredits`` (and changes nothing) when ``amount`` exceeds the available
        credits; returns the new transaction in API form.
        """
        amount = check_int("amount", amount, minimum=1)
        description = check_str("description", description)
        with self._lock:
            available = self._monthly + self._bonus - self._used
            if amount > available:
                raise InsufficientCredits(
                    f"cannot spend {amount} credits: only {available} available "
                    f"({self._monthly} monthly + {self._bonus} bonus - {self._used} used)"
                )
            self._used += amount
            return self._history.record("DEDUCTION", -amount, description, self._now()).to_json()

    def top_up(self, amount: int, description: str = "Bonus credits") -> dict[str, Any]:
        """Add bonus credits (coupon/adjustment): ``TOP_UP`` of ``+amount``. Returns the transaction."""
        amount = check_int("amount", amount, minimum=1)
        description = check_str("description", description)
        with self._lock:
            self._bonus += amount
            return self._history.record("TOP_UP", amount, description, self._now()).to_json()

    def reset_month(self, at: datetime | str | None = None) -> dict[str, Any]:
        """Run the monthly reset as of ``at`` (default now).

        Bonus credits carry forward and are spent first, so what was used this month comes out of the
        bonus before the monthly allowance: remaining bonus = ``max(0, bonus - used)``; then ``used``
        returns to 0 and the monthly allowance is fresh. Returns the ``MONTHLY_RESET`` transaction.
        """
        when = None if at is None else parse_timestamp(at, "at")
        with self._lock:
            when = when or self._now()
            self._bonus = max(0, self._bonus - self._used)
            self._used = 0
            self._last_reset_at = when
            return self._history.record("MONTHLY_RESET", self._monthly, "Monthly credit reset", when).to_json()

    # -- history -----------------------------------------------------------------------------------------

    @property
    def transaction_count(self) -> int:
        return len(self._history)

    def transactions_page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """One newest-first page in API form, plus the total; an offset past the end gives ``[]``."""
        return self._history.page(limit, offset)

    def all_transactions(self) -> list[dict[str, Any]]:
        """The whole history, newest first, in API form (for assertions; O(n))."""
        return self._history.all()

    def add_transaction(
        self,
        type: str = "DEDUCTION",
        amount: int = -1,
        description: str = "Lead search: sandbox",
        created_at: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Append one entry to the history only (the balance is not touched; use ``spend``/``top_up``
        for both). ``created_at`` in the past slots it into place. Returns it in API form."""
        if type not in TRANSACTION_TYPES:
            raise ValueError(f"type must be one of {', '.join(sorted(TRANSACTION_TYPES))}; got {type!r}")
        amount = check_int("amount", amount)
        description = check_str("description", description)
        when = None if created_at is None else parse_timestamp(created_at, "created_at")
        with self._lock:
            return self._history.record(type, amount, description, when or self._now()).to_json()

    def insert_transactions(
        self,
        count: int = 1,
        *,
        type: str = "DEDUCTION",
        amount: int = -1,
        description: str = "Lead search: inserted",
        created_at: datetime | str | None = None,
    ) -> list[dict[str, Any]]:
        """Add ``count`` entries to the history at once (all newer than everything else unless
        ``created_at`` says otherwise): the "new activity arrived while the client was paging" case.
        Descriptions get a ``#n`` suffix so the entries are told apart. Returns them, oldest first."""
        count = check_int("count", count, minimum=1)
        with self._lock:
            return [self.add_transaction(type, amount, f"{description} #{i}", created_at) for i in range(1, count + 1)]

    def delete_transaction(self, transaction_id: str) -> dict[str, Any]:
        """Remove one entry from the history (the balance is not touched). Raises ``KeyError`` if absent."""
        return self._history.delete(transaction_id)

    # -- faults (the queue is in .faults; the *_next shortcuts come from FaultShortcuts) ------------------

    def inject(self, fault: Fault, times: int | None = 1) -> Fault:
        """Queue ``fault`` for the next ``times`` matching requests (``None``: until ``clear_faults``)."""
        return self._faults.push(fault, times)

    def take_fault(self, path: str) -> Fault | None:
        """Consume the oldest queued fault that matches ``path`` (the server calls this per API request)."""
        return self._faults.take(path)

    def pending_faults(self) -> list[dict[str, Any]]:
        """Queued faults in order, each with ``times`` left (``None``: unlimited)."""
        return self._faults.pending()

    def clear_faults(self) -> int:
        """Drop every queued fault; returns how many entries were dropped."""
        return self._faults.clear()

    # -- request log (kept in .requestlog) ---------------------------------------------------------------

    def next_request_id(self) -> str:
        return self._log.next_id()

    def record_request(
        self,
        *,
        request_id: str,
        method: str,
        path: str,
        query: Mapping[str, str],
        auth_valid: bool,
        status: int,
        fault: str | None = None,
    ) -> RecordedRequest:
        record = RecordedRequest(
            request_id=request_id,
            method=method,
            path=path,
            query=dict(query),
            auth_valid=auth_valid,
            status=status,
            fault=fault,
            at=self._now(),
        )
        self._log.append(record)
        return record

    @property
    def requests(self) -> list[RecordedRequest]:
        """Recorded API requests, oldest first (admin requests are not recorded)."""
        return self._log.records()

    def request_count(self, path: str | None = None) -> int:
        """API requests served so far, all or to one ``path`` (exact, even past the log's cap)."""
        return self._log.count(path)

    def reset_request_log(self) -> None:
        self._log.clear()

    # -- snapshot ----------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The balance, the number of transactions, the queued faults and the request count."""
        with self._lock:
            return {
                "balance": self.balance(),
                "transactions_total": len(self._history),
                "faults": self.pending_faults(),
                "request_count": self.request_count(),
            }
