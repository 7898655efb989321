"""The sandbox's in-memory organisation: balance, transaction history, fault queue and request log.

Everything a test wants to control or inspect lives here, behind one lock, so the HTTP handler threads,
the test thread and admin requests from other processes all see one consistent organisation. The
module knows nothing about HTTP beyond the API's JSON field names; ``server.py`` does the wire work.

Only the standard library is imported: the sandbox ships inside the provider and is also loaded as a
pytest plugin, so importing it must stay cheap and must never pull in Airflow.
"""

from __future__ import annotations

import bisect
import calendar
import math
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

__all__ = [
    "API_PREFIX",
    "BALANCE_PATH",
    "ERROR_KINDS",
    "FAULT_KINDS",
    "MALFORMED_KINDS",
    "TRANSACTIONS_PATH",
    "TRANSACTION_TYPES",
    "Fault",
    "FaultShortcuts",
    "InsufficientCredits",
    "RecordedRequest",
    "SandboxState",
    "Transaction",
    "format_timestamp",
    "most_recent_reset",
    "parse_timestamp",
]

API_PREFIX: Final = "/api/"
BALANCE_PATH: Final = "/api/v1/credits/balance"
TRANSACTIONS_PATH: Final = "/api/v1/credits/transactions"

TRANSACTION_TYPES: Final = frozenset({"DEDUCTION", "MONTHLY_RESET", "TOP_UP"})

#: Faults that answer with an error status instead of the API.
ERROR_KINDS: Final = frozenset({"error", "rate_limit"})
#: Faults that answer ``200`` with a body a careful client must refuse.
MALFORMED_KINDS: Final = frozenset(
    {
        "html",
        "empty",
        "truncated",
        "array",
        "success_false_string",
        "success_false_object",
        "missing_field",
        "mistyped_field",
        "not_json",
    }
)
#: Every fault kind; ``slow`` only delays the normal answer.
FAULT_KINDS: Final = ERROR_KINDS | MALFORMED_KINDS | {"slow"}

#: Default cap on the request log, so a long benchmark against the CLI cannot grow memory without bound.
#: Counts returned by ``request_count`` stay exact beyond the cap.
DEFAULT_MAX_LOGGED_REQUESTS: Final = 100_000


class InsufficientCredits(ValueError):
    """Raised by ``spend`` when the organisation has fewer available credits than asked for.

    A ``ValueError`` subclass because it is a refusal of the caller's input, like the real API would
    refuse a search it cannot pay for; the admin HTTP endpoint maps it to ``409 Conflict``.
    """


# --------------------------------------------------------------------------------------------------------
# Time helpers
# --------------------------------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _to_millis(value: datetime) -> datetime:
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
    return _to_millis(parsed)


def most_recent_reset(now: datetime, reset_day: int) -> datetime:
    """The latest billing anniversary at 00:00 UTC at or before ``now``.

    ``reset_day`` beyond a month's length is clamped to that month's last day (a ``31`` resets on
    28/29 February), which is how a monthly billing anniversary behaves.
    """
    _check_int("reset_day", reset_day, minimum=1, maximum=31)
    now = now.astimezone(UTC)
    year, month = now.year, now.month
    for _ in range(2):
        day = min(reset_day, calendar.monthrange(year, month)[1])
        candidate = datetime(year, month, day, tzinfo=UTC)
        if candidate <= now:
            return candidate
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    raise AssertionError("unreachable: last month's anniversary is always in the past")  # pragma: no cover


# --------------------------------------------------------------------------------------------------------
# Validation helpers: every message names the field, so an admin 400 tells the caller what to fix.
# --------------------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    # bool is an int subclass; True as "1 credit" is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def _check_times(times: object) -> int | None:
    if times is None:
        return None
    return _check_int("times", times, minimum=1)


# --------------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """What the sandbox remembers about one API request.

    Deliberately without headers: the ``Authorization`` header carries the key, and a request log that
    ends up in a test report or a CI artifact must not leak it. ``auth_valid`` says all a test needs.
    """

    request_id: str
    method: str
    path: str
    query: dict[str, str]
    auth_valid: bool
    status: int
    fault: str | None
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "query": dict(self.query),
            "auth_valid": self.auth_valid,
            "status": self.status,
            "fault": self.fault,
            "at": format_timestamp(self.at),
        }


@dataclass(frozen=True)
class Fault:
    """One misbehaviour for the sandbox to show instead of (or before) a normal answer.

    Faults sit in a FIFO queue and are consumed by the next API request whose path matches (``path``
    ``None`` matches every path under ``/api/``). They apply before authentication and routing, like a
    proxy, gateway or rate limiter in front of the real API would. Admin paths never see them.

    Kinds:

    * ``error``: ``status`` (default 503) with ``body``/``content_type`` (default: a JSON error body) and
      an optional ``Retry-After`` header.
    * ``rate_limit``: ``429`` with ``Retry-After: retry_after`` when given (``rate_limit_next`` defaults
      it to ``"1"``; any string is sent verbatim, so tests can send seconds, an HTTP date or garbage).
    * ``slow``: waits ``delay_seconds`` then answers normally.
    * malformed ``200`` answers: ``html`` (a proxy's login page), ``empty``, ``truncated`` (the real JSON
      cut half-way, with a matching ``Content-Length``), ``array`` (top-level JSON array),
      ``success_false_string``, ``success_false_object``, ``missing_field`` (balance without
      ``availableCredits``; transactions without ``meta.total``), ``mistyped_field``
      (``availableCredits``/``meta.total`` as a string such as ``"82"``), ``not_json`` (``oops`` labelled
      ``application/json``).

    Any kind may also carry ``delay_seconds``: a slow 503 is a realistic gateway timeout.
    """

    kind: str
    status: int | None = None
    retry_after: str | None = None
    body: str | bytes | None = None
    content_type: str | None = None
    delay_seconds: float = 0.0
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(sorted(FAULT_KINDS))}; got {self.kind!r}")
        status = self.status
        if self.kind == "error":
            status = 503 if status is None else _check_int("status", status, minimum=400, maximum=599)
        elif self.kind == "rate_limit":
            if status not in (None, 429):
                raise ValueError(f"status of a rate_limit fault is always 429, got {status!r}")
            status = 429
        elif status is not None:
            raise ValueError(f"status applies only to 'error' and 'rate_limit' faults, not {self.kind!r}")
        object.__setattr__(self, "status", status)

        if self.retry_after is not None:
            _check_str("retry_after", self.retry_after)
            if any(ch in self.retry_after for ch in "\r\n"):
                raise ValueError("retry_after must not contain line breaks")
            if self.kind not in ERROR_KINDS:
                raise ValueError(f"retry_after applies only to 'error' and 'rate_limit' faults, not {self.kind!r}")

        if self.body is not None and not isinstance(self.body, str | bytes):
            raise ValueError(f"body must be a string or bytes, got {self.body!r}")
        if (self.body is not None or self.content_type is not None) and self.kind not in ERROR_KINDS:
            raise ValueError(f"body/content_type apply only to 'error' and 'rate_limit' faults, not {self.kind!r}")
        if self.content_type is not None:
            _check_str("content_type", self.content_type)
            if any(ch in self.content_type for ch in "\r\n"):
                raise ValueError("content_type must not contain line breaks")

        delay = self.delay_seconds
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay) or delay < 0:
            raise ValueError(f"delay_seconds must be a finite number >= 0, got {delay!r}")
        object.__setattr__(self, "delay_seconds", float(delay))

        if self.path is not None and (not isinstance(self.path, str) or not self.path.startswith(API_PREFIX)):
            raise ValueError(f"path must be an API path starting with {API_PREFIX!r}, got {self.path!r}")

    def matches(self, path: str) -> bool:
        return self.path is None or self.path == path

    def to_json(self) -> dict[str, Any]:
        """JSON form used by the admin endpoints (``delay`` is the admin spelling of ``delay_seconds``)."""
        body = self.body.decode("utf-8", "replace") if isinstance(self.body, bytes) else self.body
        return {
            "kind": self.kind,
            "status": self.status,
            "retry_after": self.retry_after,
            "body": body,
            "content_type": self.content_type,
            "delay": self.delay_seconds,
            "path": self.path,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """Build from admin JSON. ``kind`` may be left out when the rest says it: a ``status`` of 429
        means ``rate_limit``, another ``status`` means ``error``, only a ``delay`` means ``slow``.
        A ``rate_limit`` without a ``retry_after`` key gets ``"1"``; ``null`` omits the header."""
        kind = data.get("kind")
        if kind is None:
            if data.get("status") == 429:
                kind = "rate_limit"
            elif data.get("status") is not None:
                kind = "error"
            elif data.get("delay") is not None:
                kind = "slow"
            else:
                raise ValueError("kind is required (or give status/delay to imply it)")
        body = data.get("body")
        if body is not None and not isinstance(body, str):
            raise ValueError(f"body must be a string, got {body!r}")
        delay = data.get("delay")
        # Like rate_limit_next: a 429 says when to come back unless the caller sends null explicitly.
        retry_after = data.get("retry_after", "1" if kind == "rate_limit" else None)
        return cls(
            kind=_check_str("kind", kind),
            status=data.get("status"),
            retry_after=retry_after,
            body=body,
            content_type=data.get("content_type"),
            delay_seconds=0.0 if delay is None else delay,
            path=data.get("path"),
        )


@dataclass
class _QueuedFault:
    fault: Fault
    remaining: int | None  # None: until clear_faults()


# --------------------------------------------------------------------------------------------------------
# Shortcut methods shared by SandboxState, SandboxServer and SandboxClient
# --------------------------------------------------------------------------------------------------------


class FaultShortcuts:
    """The readable ``*_next`` helpers, written once on top of ``inject``.

    Shared by the in-process state, the server object and the cross-process admin client, so the same
    test line works whichever one a test holds.
    """

    def inject(self, fault: Fault, times: int | None = 1) -> Fault:
        """Queue ``fault`` for the next ``times`` matching requests (``None``: until ``clear_faults``)."""
        raise NotImplementedError

    def fail_next(
        self,
        status: int = 503,
        times: int | None = 1,
        retry_after: str | None = None,
        body: str | bytes | None = None,
        *,
        content_type: str | None = None,
        delay_seconds: float = 0.0,
        path: str | None = None,
    ) -> Fault:
        """Answer the next request(s) with ``status``; e.g. a proxy's page:
        ``fail_next(502, body="<html>Bad gateway</html>", content_type="text/html")``."""
        fault = Fault(
            "error",
            status=status,
            retry_after=retry_after,
            body=body,
            content_type=content_type,
            delay_seconds=delay_seconds,
            path=path,
        )
        return self.inject(fault, times)

    def rate_limit_next(
        self, retry_after: str | None = "1", times: int | None = 1, *, path: str | None = None
    ) -> Fault:
        """Answer ``429`` with ``Retry-After: retry_after`` (``None`` leaves the header out)."""
        return self.inject(Fault("rate_limit", retry_after=retry_after, path=path), times)

    def slow_next(self, delay_seconds: float, times: int | None = 1, *, path: str | None = None) -> Fault:
        """Wait ``delay_seconds`` before the normal answer (to exercise client timeouts)."""
        return self.inject(Fault("slow", delay_seconds=delay_seconds, path=path), times)

    def malformed_next(self, kind: str, times: int | None = 1, *, path: str | None = None) -> Fault:
        """Answer ``200`` with a malformed body; ``kind`` is one of ``MALFORMED_KINDS``."""
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"kind must be one of {', '.join(sorted(MALFORMED_KINDS))}; got {kind!r}")
        return self.inject(Fault(kind, path=path), times)


# --------------------------------------------------------------------------------------------------------
# Seed history
# --------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------
# The organisation
# --------------------------------------------------------------------------------------------------------


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
        self._clock = clock or _utc_now
        self._monthly = _check_int("monthly_credits", monthly_credits, minimum=0)
        self._bonus = _check_int("bonus_credits", bonus_credits, minimum=0)
        self._used = _check_int("used_credits", used_credits, minimum=0)
        self._reset_day = _check_int("reset_day", reset_day, minimum=1, maximum=31)
        now = self._now()
        self._last_reset_at = (
            most_recent_reset(now, self._reset_day)
            if last_reset_at is None
            else parse_timestamp(last_reset_at, "last_reset_at")
        )
        # Oldest first, ordered by created_at (ties keep insertion order): appending is O(1) and a
        # newest-first page is a reversed slice from the end.
        self._transactions: list[Transaction] = []
        self._next_txn = 1
        self._faults: deque[_QueuedFault] = deque()
        max_logged = _check_int("max_logged_requests", max_logged_requests, minimum=1)
        self._requests: deque[RecordedRequest] = deque(maxlen=max_logged)
        self._request_counts: Counter[str] = Counter()
        self._next_request = 1
        if seed_transactions is None:
            self._seed_plausible(now)
        else:
            self._seed_synthetic(_check_int("seed_transactions", seed_transactions, minimum=0), now)

    # -- internals ---------------------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("clock must return an aware datetime")
        return _to_millis(now)

    def _new_id(self) -> str:
        txn_id = f"txn_{self._next_txn:06d}"
        self._next_txn += 1
        return txn_id

    def _insert(self, txn: Transaction) -> None:
        if not self._transactions or self._transactions[-1].created_at <= txn.created_at:
            self._transactions.append(txn)
        else:
            index = bisect.bisect_right(self._transactions, txn.created_at, key=lambda t: t.created_at)
            self._transactions.insert(index, txn)

    def _record(self, type_: str, amount: int, description: str, created_at: datetime) -> Transaction:
        txn = Transaction(self._new_id(), type_, amount, description, created_at)
        self._insert(txn)
        return txn

    def _seed_plausible(self, now: datetime) -> None:
        start = self._last_reset_at
        self._record("MONTHLY_RESET", self._monthly, "Monthly credit reset", start)
        costs: list[int] = []
        left = self._used
        while left > 0:
            cost = left if len(costs) == _MAX_SEED_DEDUCTIONS - 1 else min(left, _SEED_COSTS[len(costs) % 8])
            costs.append(cost)
            left -= cost
        entries: list[tuple[str, int, str]] = []
        if self._bonus:
            entries.append(("TOP_UP", self._bonus, "Coupon WELCOME: bonus credits"))
        entries += [("DEDUCTION", -cost, _seed_description(i, cost)) for i, cost in enumerate(costs)]
        span = max(now - start, timedelta(0))
        for i, (type_, amount, description) in enumerate(entries, start=1):
            self._record(type_, amount, description, _to_millis(start + span * i / (len(entries) + 1)))

    def _seed_synthetic(self, count: int, now: datetime) -> None:
        # One entry a minute back from now; built in one pass straight into the (already sorted) list.
        first = now - timedelta(minutes=count - 1)
        minute = timedelta(minutes=1)
        txns = self._transactions
        for i in range(count):
            if i % 500 == 0:
                txn = Transaction(
                    self._new_id(), "MONTHLY_RESET", self._monthly, "Monthly credit reset", first + minute * i
                )
            else:
                cost = _SEED_COSTS[i % 8]
                txn = Transaction(self._new_id(), "DEDUCTION", -cost, _seed_description(i, cost), first + minute * i)
            txns.append(txn)

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
        new_monthly = None if monthly is None else _check_int("monthly", monthly, minimum=0)
        new_bonus = None if bonus is None else _check_int("bonus", bonus, minimum=0)
        new_used = None if used is None else _check_int("used", used, minimum=0)
        new_day = None if reset_day is None else _check_int("reset_day", reset_day, minimum=1, maximum=31)
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
        amount = _check_int("amount", amount, minimum=1)
        description = _check_str("description", description)
        with self._lock:
            available = self._monthly + self._bonus - self._used
            if amount > available:
                raise InsufficientCredits(
                    f"cannot spend {amount} credits: only {available} available "
                    f"({self._monthly} monthly + {self._bonus} bonus - {self._used} used)"
                )
            self._used += amount
            return self._record("DEDUCTION", -amount, description, self._now()).to_json()

    def top_up(self, amount: int, description: str = "Bonus credits") -> dict[str, Any]:
        """Add bonus credits (coupon/adjustment): ``TOP_UP`` of ``+amount``. Returns the transaction."""
        amount = _check_int("amount", amount, minimum=1)
        description = _check_str("description", description)
        with self._lock:
            self._bonus += amount
            return self._record("TOP_UP", amount, description, self._now()).to_json()

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
            return self._record("MONTHLY_RESET", self._monthly, "Monthly credit reset", when).to_json()

    # -- history -----------------------------------------------------------------------------------------

    @property
    def transaction_count(self) -> int:
        with self._lock:
            return len(self._transactions)

    def transactions_page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """One newest-first page in API form, plus the total; an offset past the end gives ``[]``."""
        limit = _check_int("limit", limit, minimum=1)
        offset = _check_int("offset", offset, minimum=0)
        with self._lock:
            total = len(self._transactions)
            stop = total - offset
            if stop <= 0:
                return [], total
            start = max(0, stop - limit)
            page = self._transactions[start:stop]
        return [txn.to_json() for txn in reversed(page)], total

    def all_transactions(self) -> list[dict[str, Any]]:
        """The whole history, newest first, in API form (for assertions; O(n))."""
        with self._lock:
            snapshot = list(self._transactions)
        return [txn.to_json() for txn in reversed(snapshot)]

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
        amount = _check_int("amount", amount)
        description = _check_str("description", description)
        when = None if created_at is None else parse_timestamp(created_at, "created_at")
        with self._lock:
            return self._record(type, amount, description, when or self._now()).to_json()

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
        count = _check_int("count", count, minimum=1)
        with self._lock:
            return [self.add_transaction(type, amount, f"{description} #{i}", created_at) for i in range(1, count + 1)]

    def delete_transaction(self, transaction_id: str) -> dict[str, Any]:
        """Remove one entry from the history (the balance is not touched). Raises ``KeyError`` if absent."""
        with self._lock:
            for index in range(len(self._transactions) - 1, -1, -1):
                if self._transactions[index].id == transaction_id:
                    return self._transactions.pop(index).to_json()
        raise KeyError(f"no transaction with id {transaction_id!r}")

    # -- faults ------------------------------------------------------------------------------------------

    def inject(self, fault: Fault, times: int | None = 1) -> Fault:
        if not isinstance(fault, Fault):
            raise ValueError(f"fault must be a Fault, got {fault!r}")
        remaining = _check_times(times)
        with self._lock:
            self._faults.append(_QueuedFault(fault, remaining))
        return fault

    def take_fault(self, path: str) -> Fault | None:
        """Consume the oldest queued fault that matches ``path`` (the server calls this per API request)."""
        with self._lock:
            for entry in self._faults:
                if entry.fault.matches(path):
                    if entry.remaining is not None:
                        entry.remaining -= 1
                        if entry.remaining == 0:
                            self._faults.remove(entry)
                    return entry.fault
        return None

    def pending_faults(self) -> list[dict[str, Any]]:
        """Queued faults in order, each with ``times`` left (``None``: unlimited)."""
        with self._lock:
            return [{**entry.fault.to_json(), "times": entry.remaining} for entry in self._faults]

    def clear_faults(self) -> int:
        """Drop every queued fault; returns how many entries were dropped."""
        with self._lock:
            dropped = len(self._faults)
            self._faults.clear()
            return dropped

    # -- request log -------------------------------------------------------------------------------------

    def next_request_id(self) -> str:
        with self._lock:
            request_id = f"req_{self._next_request}"
            self._next_request += 1
            return request_id

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
        with self._lock:
            self._requests.append(record)
            self._request_counts[path] += 1
        return record

    @property
    def requests(self) -> list[RecordedRequest]:
        """Recorded API requests, oldest first (admin requests are not recorded)."""
        with self._lock:
            return list(self._requests)

    def request_count(self, path: str | None = None) -> int:
        """API requests served so far, all or to one ``path`` (exact, even past the log's cap)."""
        with self._lock:
            if path is None:
                return sum(self._request_counts.values())
            return self._request_counts[path]

    def reset_request_log(self) -> None:
        with self._lock:
            self._requests.clear()
            self._request_counts.clear()

    # -- snapshot ----------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What ``GET /_sandbox/state`` returns."""
        with self._lock:
            return {
                "balance": self.balance(),
                "transactions_total": len(self._transactions),
                "faults": self.pending_faults(),
                "request_count": sum(self._request_counts.values()),
            }
