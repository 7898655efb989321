"""Typed, validated views of the Credits API's answers: frozen dataclasses, timestamps pendulum UTC.

Parsing is strict on purpose: this provider decides whether paid-for work may start, so a missing
field, a string where a number belongs, ``true`` posing as ``1`` or a timestamp without a time zone
is an error naming the field, never a guess. Unknown extra fields are accepted (the API may grow).
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import pendulum

from airflow_provider_localleads.client.values import iso_z, shorten
from airflow_provider_localleads.exceptions import LocalLeadsResponseError

__all__ = [
    "CreditBalance",
    "CreditTransaction",
    "CreditUsage",
    "OversizedInteger",
    "TransactionPage",
    "next_anniversary",
]


class OversizedInteger:
    """A JSON integer with more digits than Python converts: valid JSON, so the field reports it by name."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<an integer of {self.digits} digits>"

    __str__ = __repr__


def _utc(value: datetime) -> pendulum.DateTime:
    """``value`` as a pendulum DateTime in UTC (the constructor: ~10x cheaper than ``pendulum.instance``)."""
    v = value.astimezone(UTC)
    return _on(v.year, v.month, v.day, v)


def _describe(value: object) -> str:
    return f"{type(value).__name__} {shorten(repr(value), 60)}"


def _error(message: str) -> LocalLeadsResponseError:
    """A field error; it knows nothing of HTTP (the client adds status, path and request id)."""
    return LocalLeadsResponseError(
        f"Unexpected response from the LocalLeads API: {message}. The API may have changed or a proxy "
        "answered instead of it; check the host in the connection and the provider's release notes"
    )


def _json_safe(model: Any, **extra: Any) -> dict[str, Any]:
    values = {f.name: getattr(model, f.name) for f in fields(model)} | extra
    return {name: iso_z(v) if isinstance(v, datetime) else v for name, v in values.items()}


class _Fields:
    def __init__(self, obj: object, where: str) -> None:
        self.where = where
        if not isinstance(obj, Mapping):
            raise _error(f"{where} must be a JSON object, got {_describe(obj)}")
        self.obj: Mapping[str, Any] = obj

    def _get(self, name: str) -> Any:
        if name not in self.obj:
            raise _error(f"{self.where}.{name} is missing")
        return self.obj[name]

    def integer(self, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._get(name)
        if isinstance(value, OversizedInteger):
            raise _error(f"{self.where}.{name} is out of range: {value}")
        if type(value) is not int:  # `true` is no credit count
            raise _error(f"{self.where}.{name} must be an integer, got {_describe(value)}")
        if minimum is not None and value < minimum:
            raise _error(f"{self.where}.{name} must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise _error(f"{self.where}.{name} must be <= {maximum}, got {value}")
        return value

    def string(self, name: str, *, non_empty: bool = False) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise _error(f"{self.where}.{name} must be a string, got {_describe(value)}")
        if non_empty and not value:
            raise _error(f"{self.where}.{name} must not be empty")
        return value

    def timestamp(self, name: str) -> pendulum.DateTime:
        raw = self.string(name)
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise _error(f"{self.where}.{name} must be an ISO 8601 timestamp, got {_describe(raw)}") from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise _error(f"{self.where}.{name} has no time zone: {_describe(raw)}")
        try:
            return _utc(parsed)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
            raise _error(f"{self.where}.{name} is out of range in UTC: {_describe(raw)}") from None


def _on(year: int, month: int, day: int, time_of: datetime) -> pendulum.DateTime:
    """That day at ``time_of``'s time, in UTC (the constructor: pendulum's ``replace``/``add`` cost 5x more)."""
    t = time_of
    return pendulum.DateTime(year, month, day, t.hour, t.minute, t.second, t.microsecond, tzinfo=pendulum.UTC)


def next_anniversary(after: datetime, reset_day: int) -> pendulum.DateTime:
    """The first billing anniversary strictly after ``after``, in UTC, at ``after``'s time of day.

    Day ``reset_day`` clamped to each month's last day, computed from ``reset_day`` for each month so
    that it never drifts (day 31: Feb 28 or 29, then Mar 31 again).
    """
    if not 1 <= reset_day <= 31:
        raise ValueError(f"reset_day must be between 1 and 31, got {reset_day}")
    after = _utc(after)
    candidate = _on(after.year, after.month, min(reset_day, after.days_in_month), after)
    if candidate > after:
        return candidate
    year, month = (after.year + 1, 1) if after.month == 12 else (after.year, after.month + 1)
    return _on(year, month, min(reset_day, calendar.monthrange(year, month)[1]), after)


@dataclass(frozen=True, slots=True)
class CreditBalance:
    monthly_credits: int
    bonus_credits: int
    used_credits: int
    #: monthly + bonus - used, as the API computed it; negative when the account is overdrawn.
    available_credits: int
    #: Day of the month (1-31) on which monthly credits reset; clamped to short months.
    reset_day: int
    last_reset_at: pendulum.DateTime

    @property
    def next_reset_at(self) -> pendulum.DateTime:
        return next_anniversary(self.last_reset_at, self.reset_day)

    def can_afford(self, cost: int) -> bool:
        return self.available_credits >= cost

    def summary(self) -> str:
        return (
            f"{self.available_credits} available (monthly {self.monthly_credits} + bonus {self.bonus_credits}"
            f" - used {self.used_credits}); next reset {self.next_reset_at.date().isoformat()}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (what operators push to XCom): timestamps as ISO 8601 UTC strings."""
        return _json_safe(self, next_reset_at=self.next_reset_at)

    @classmethod
    def from_api(cls, data: object) -> CreditBalance:
        f = _Fields(data, "data")
        balance = cls(
            monthly_credits=f.integer("monthlyCredits", minimum=0),
            bonus_credits=f.integer("bonusCredits", minimum=0),
            used_credits=f.integer("usedCredits", minimum=0),
            available_credits=f.integer("availableCredits"),
            reset_day=f.integer("resetDay", minimum=1, maximum=31),
            last_reset_at=f.timestamp("lastResetAt"),
        )
        try:
            # Computed from lastResetAt by every consumer (summary, to_dict, XCom): prove it can be.
            balance.next_reset_at  # noqa: B018
        except (ValueError, OverflowError):
            raise LocalLeadsResponseError(
                "Unexpected response from the LocalLeads API: data.lastResetAt "
                f"{balance.last_reset_at.isoformat()} is too close to the end of the calendar to compute the "
                "next reset; check the host in the connection"
            ) from None
        return balance

    @classmethod
    def from_response(cls, body: Mapping[str, Any]) -> CreditBalance:
        return cls.from_api(body.get("data"))


@dataclass(frozen=True, slots=True)
class CreditTransaction:
    id: str
    #: e.g. ``DEDUCTION``, ``MONTHLY_RESET``; kept as the API's string so new types are not lost.
    type: str
    #: Negative for deductions, positive for resets and top-ups.
    amount: int
    description: str
    created_at: pendulum.DateTime

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(self)

    @classmethod
    def from_api(cls, data: object, *, where: str = "data[]") -> CreditTransaction:
        f = _Fields(data, where)
        return cls(
            id=f.string("id", non_empty=True),
            type=f.string("type", non_empty=True),
            amount=f.integer("amount"),
            description=f.string("description"),
            created_at=f.timestamp("createdAt"),
        )


@dataclass(frozen=True, slots=True)
class TransactionPage:
    items: tuple[CreditTransaction, ...]
    #: The API's estimate: totals and pages may be counted at different moments.
    total: int
    limit: int
    offset: int

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.items) < self.total

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(self, items=[t.to_dict() for t in self.items])

    @classmethod
    def from_api(cls, data: object, meta: object) -> TransactionPage:
        if not isinstance(data, list):
            raise _error(f"body.data must be a JSON array, got {_describe(data)}")
        m = _Fields(meta, "meta")
        items = tuple(CreditTransaction.from_api(item, where=f"data[{i}]") for i, item in enumerate(data))
        limit = m.integer("limit", minimum=1)
        if len(items) > limit:
            raise _error(f"data has {len(items)} items, more than meta.limit={limit}")
        return cls(items=items, total=m.integer("total", minimum=0), limit=limit, offset=m.integer("offset", minimum=0))

    @classmethod
    def from_response(cls, body: Mapping[str, Any]) -> TransactionPage:
        return cls.from_api(body.get("data"), body.get("meta"))


@dataclass(frozen=True, slots=True)
class CreditUsage:
    """Recent spending and how long the available credits last at that rate (``LocalLeadsHook.get_usage``).

    ``per_day`` is ``spent / days``; ``since`` is ``days`` before the time asked about.
    """

    #: The sum of ``|amount|`` over the window's ``DEDUCTION`` transactions.
    spent: int
    per_day: float
    deductions: int
    since: pendulum.DateTime
    next_reset_at: pendulum.DateTime
    #: When the available credits reach zero at ``per_day``; None if they last until ``next_reset_at``
    #: (or nothing was spent). The time asked about if none are left.
    runs_out_at: pendulum.DateTime | None
    days: int
    available_credits: int

    def summary(self) -> str:
        """One human line, e.g. "at the last 30 days' rate (12.3/day) these 82 credits last until
        2026-12-08, 7 days before the reset on 2026-12-15"."""
        reset = f"the reset on {self.next_reset_at.date().isoformat()}"
        rate = f"at the last {self.days} days' rate ({_rate(self.per_day)}/day)"
        if self.available_credits <= 0:
            return f"no credits are left ({self.available_credits} available) until {reset}"
        if self.runs_out_at is None:
            if not self.spent:
                rate = f"nothing was spent in the last {self.days} days:"
            return f"{rate} these {self.available_credits} credits last until {reset}"
        lead = self.next_reset_at - self.runs_out_at
        before = "less than a day" if lead.days < 1 else f"{lead.days} day{'s' if lead.days != 1 else ''}"
        return (
            f"{rate} these {self.available_credits} credits last until {self.runs_out_at.date().isoformat()}, "
            f"{before} before {reset}"
        )

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(self)


def _rate(per_day: float) -> str:
    """12.3 for 12.34; two significant digits below 1 (0.043), so a small rate never shows as 0.0."""
    return f"{per_day:.1f}" if per_day >= 1 or per_day == 0 else f"{per_day:.2g}"
