"""Unit tests for the typed views of the Credits API's answers (``models.py``)."""

from __future__ import annotations

import calendar
import copy
import dataclasses
import json
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pendulum
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback_support import BALANCE_DATA

from airflow_provider_localleads.client.responses import parse_answer
from airflow_provider_localleads.exceptions import LocalLeadsResponseError
from airflow_provider_localleads.models import (
    CreditBalance,
    CreditTransaction,
    TransactionPage,
    next_anniversary,
)

# The exact examples of /work/shared/api-docs/credits.txt.
TRANSACTIONS_DATA: list[dict[str, Any]] = [
    {
        "id": "txn_abc123",
        "type": "DEDUCTION",
        "amount": -12,
        "description": "Lead search: Dentists in Austin, TX (97 results)",
        "createdAt": "2026-05-05T10:01:00.000Z",
    },
    {
        "id": "txn_def456",
        "type": "MONTHLY_RESET",
        "amount": 100,
        "description": "Monthly credit reset",
        "createdAt": "2026-05-01T00:00:00.000Z",
    },
]
TRANSACTIONS_META: dict[str, Any] = {"total": 28, "limit": 50, "offset": 0}

BALANCE_INT_FIELDS = ["monthlyCredits", "bonusCredits", "usedCredits", "availableCredits", "resetDay"]
# Values that are not a JSON integer; bool is an int subclass in Python but `true` is not a count.
NOT_INTEGERS = ["82", True, False, 1.5, 82.0, None, [], [82], {}]
NOT_STRINGS = [1, 1.5, True, None, [], {}]


def balance_data(**overrides: Any) -> dict[str, Any]:
    data = copy.deepcopy(BALANCE_DATA)
    data.update(overrides)
    return data


def transaction_data(**overrides: Any) -> dict[str, Any]:
    data = copy.deepcopy(TRANSACTIONS_DATA[0])
    data.update(overrides)
    return data


def make_balance(reset_day: int, last_reset_at: datetime) -> CreditBalance:
    return CreditBalance(
        monthly_credits=100,
        bonus_credits=25,
        used_credits=43,
        available_credits=82,
        reset_day=reset_day,
        last_reset_at=last_reset_at,
    )


def is_pendulum_utc(value: datetime) -> bool:
    """A pendulum DateTime in UTC: what every model timestamp is (Airflow's own date type)."""
    return isinstance(value, pendulum.DateTime) and value.tzinfo == pendulum.UTC and value.utcoffset() == timedelta(0)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# CreditBalance.from_api
# ---------------------------------------------------------------------------------------------


def test_balance_from_documented_example() -> None:
    balance = CreditBalance.from_api(BALANCE_DATA)

    assert balance == CreditBalance(
        monthly_credits=100,
        bonus_credits=25,
        used_credits=43,
        available_credits=82,
        reset_day=1,
        last_reset_at=utc(2026, 5, 1),
    )
    assert balance.last_reset_at.utcoffset() == timedelta(0)
    assert balance.next_reset_at == utc(2026, 6, 1)
    assert is_pendulum_utc(balance.last_reset_at)
    assert is_pendulum_utc(balance.next_reset_at)


def test_balance_from_api_does_not_modify_its_input() -> None:
    data = balance_data()
    CreditBalance.from_api(data)
    assert data == BALANCE_DATA


@pytest.mark.parametrize("field", [*BALANCE_INT_FIELDS, "lastResetAt"])
def test_balance_missing_field_is_named(field: str) -> None:
    data = balance_data()
    del data[field]

    with pytest.raises(LocalLeadsResponseError, match=rf"data\.{field} is missing"):
        CreditBalance.from_api(data)


@pytest.mark.parametrize("field", BALANCE_INT_FIELDS)
@pytest.mark.parametrize("bad", NOT_INTEGERS, ids=repr)
def test_balance_mistyped_integer_field_is_named(field: str, bad: object) -> None:
    with pytest.raises(LocalLeadsResponseError, match=rf"data\.{field} must be an integer") as info:
        CreditBalance.from_api(balance_data(**{field: bad}))
    assert type(bad).__name__ in str(info.value)


@pytest.mark.parametrize("bad", NOT_STRINGS, ids=repr)
def test_balance_mistyped_timestamp_is_named(bad: object) -> None:
    with pytest.raises(LocalLeadsResponseError, match=r"data\.lastResetAt must be a string"):
        CreditBalance.from_api(balance_data(lastResetAt=bad))


@pytest.mark.parametrize(
    "raw",
    [
        "2026-05-01T00:00:00",  # no time zone
        "2026-05-01T00:00:00.000",  # no time zone
        "2026-05-01",  # a date, midnight of which time zone?
    ],
)
def test_balance_timestamp_without_time_zone_is_refused(raw: str) -> None:
    with pytest.raises(LocalLeadsResponseError, match=r"data\.lastResetAt has no time zone"):
        CreditBalance.from_api(balance_data(lastResetAt=raw))


@pytest.mark.parametrize("raw", ["", "yesterday", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "1714521600"])
def test_balance_timestamp_that_is_not_a_date_is_refused(raw: str) -> None:
    with pytest.raises(LocalLeadsResponseError, match=r"data\.lastResetAt must be an ISO 8601 timestamp"):
        CreditBalance.from_api(balance_data(lastResetAt=raw))


def test_balance_timestamp_with_offset_is_converted_to_utc() -> None:
    balance = CreditBalance.from_api(balance_data(lastResetAt="2026-05-01T02:30:00+02:00"))
    assert balance.last_reset_at == utc(2026, 5, 1, 0, 30)
    assert is_pendulum_utc(balance.last_reset_at)


def test_balance_extra_fields_are_accepted() -> None:
    balance = CreditBalance.from_api(balance_data(plan="pro", rolloverCredits=3, nested={"a": [1]}))
    assert balance.available_credits == 82


@pytest.mark.parametrize("field", ["monthlyCredits", "bonusCredits", "usedCredits"])
def test_balance_negative_component_is_refused(field: str) -> None:
    with pytest.raises(LocalLeadsResponseError, match=rf"data\.{field} must be >= 0, got -1"):
        CreditBalance.from_api(balance_data(**{field: -1}))


def test_balance_negative_available_is_accepted_for_overdrawn_accounts() -> None:
    balance = CreditBalance.from_api(balance_data(usedCredits=130, availableCredits=-5))
    assert balance.available_credits == -5
    assert not balance.can_afford(0)
    assert balance.can_afford(-5)


@pytest.mark.parametrize("reset_day", [0, 32, -1])
def test_balance_reset_day_out_of_range_is_refused(reset_day: int) -> None:
    with pytest.raises(LocalLeadsResponseError, match=r"data\.resetDay must be"):
        CreditBalance.from_api(balance_data(resetDay=reset_day))


@pytest.mark.parametrize("reset_day", [1, 28, 31])
def test_balance_reset_day_in_range_is_accepted(reset_day: int) -> None:
    assert CreditBalance.from_api(balance_data(resetDay=reset_day)).reset_day == reset_day


@pytest.mark.parametrize("data", [None, [], "data", 82, [BALANCE_DATA]], ids=repr)
def test_balance_data_that_is_not_an_object_is_refused(data: object) -> None:
    with pytest.raises(LocalLeadsResponseError, match=r"data must be a JSON object"):
        CreditBalance.from_api(data)


def test_balance_error_knows_no_http_and_gets_the_request_path_from_the_client() -> None:
    # The models know nothing of HTTP; parse_answer attaches status, path and request id in one place.
    with pytest.raises(LocalLeadsResponseError) as bare:
        CreditBalance.from_api(balance_data(usedCredits="43"))
    assert (bare.value.path, bare.value.http_status, bare.value.request_id) == (None, None, None)
    body = json.dumps({"success": True, "data": balance_data(usedCredits="43")}).encode()
    with pytest.raises(LocalLeadsResponseError) as info:
        parse_answer(200, {}, body, path="/api/v1/credits/balance", redact=str, build=CreditBalance.from_response)
    assert info.value.path == "/api/v1/credits/balance"
    assert "/api/v1/credits/balance" in str(info.value)
    assert info.value.summary == bare.value.summary
    assert info.value.transient is False


def test_balance_error_message_shortens_huge_values() -> None:
    with pytest.raises(LocalLeadsResponseError) as info:
        CreditBalance.from_api(balance_data(usedCredits="9" * 10_000))
    assert len(str(info.value)) < 1_000


# ---------------------------------------------------------------------------------------------
# CreditBalance: to_dict, summary, frozen
# ---------------------------------------------------------------------------------------------


def test_balance_to_dict_is_json_serialisable_with_utc_z_strings() -> None:
    balance = CreditBalance.from_api(balance_data(lastResetAt="2026-05-01T02:00:00+02:00"))
    result = balance.to_dict()

    assert json.loads(json.dumps(result)) == result
    assert result == {
        "monthly_credits": 100,
        "bonus_credits": 25,
        "used_credits": 43,
        "available_credits": 82,
        "reset_day": 1,
        "last_reset_at": "2026-05-01T00:00:00Z",
        "next_reset_at": "2026-06-01T00:00:00Z",
    }
    assert datetime.fromisoformat(result["next_reset_at"]) == balance.next_reset_at


def test_balance_summary_mentions_every_number_and_the_next_reset_date() -> None:
    text = CreditBalance.from_api(BALANCE_DATA).summary()

    assert "82 available" in text
    assert "monthly 100" in text
    assert "bonus 25" in text
    assert "used 43" in text
    assert "2026-06-01" in text


def test_balance_is_frozen() -> None:
    balance = CreditBalance.from_api(BALANCE_DATA)
    with pytest.raises(dataclasses.FrozenInstanceError):
        balance.available_credits = 1_000_000  # type: ignore[misc]
    assert balance.available_credits == 82


# ---------------------------------------------------------------------------------------------
# next_reset_at / next_anniversary
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reset_day", "last_reset_at", "expected"),
    [
        pytest.param(1, utc(2026, 5, 1), utc(2026, 6, 1), id="reset-day-1-typical"),
        pytest.param(31, utc(2026, 1, 31), utc(2026, 2, 28), id="31-jan-to-feb-28"),
        pytest.param(31, utc(2028, 1, 31), utc(2028, 2, 29), id="31-jan-to-feb-29-leap-year"),
        pytest.param(31, utc(2026, 2, 28), utc(2026, 3, 31), id="31-from-feb-28-back-to-mar-31"),
        pytest.param(31, utc(2026, 3, 31), utc(2026, 4, 30), id="31-mar-to-apr-30"),
        pytest.param(31, utc(2026, 4, 30), utc(2026, 5, 31), id="31-apr-30-to-may-31"),
        pytest.param(30, utc(2026, 1, 30), utc(2026, 2, 28), id="30-jan-to-feb-28"),
        pytest.param(29, utc(2027, 2, 28), utc(2027, 3, 29), id="29-feb-28-non-leap-to-mar-29"),
        pytest.param(15, utc(2026, 12, 15), utc(2027, 1, 15), id="december-rolls-into-next-year"),
        pytest.param(31, utc(2026, 12, 31), utc(2027, 1, 31), id="december-31-rolls-into-next-year"),
        pytest.param(15, utc(2026, 5, 3), utc(2026, 5, 15), id="last-reset-earlier-in-month"),
        pytest.param(31, utc(2026, 2, 3), utc(2026, 2, 28), id="clamped-anniversary-later-same-month"),
        pytest.param(1, utc(2026, 5, 1, 0, 0, 0, 1), utc(2026, 6, 1, 0, 0, 0, 1), id="microseconds-kept"),
    ],
)
def test_next_reset_at(reset_day: int, last_reset_at: datetime, expected: datetime) -> None:
    balance = make_balance(reset_day, last_reset_at)
    assert balance.next_reset_at == expected
    assert is_pendulum_utc(balance.next_reset_at)


def test_next_reset_at_keeps_the_time_of_day() -> None:
    balance = make_balance(10, utc(2026, 5, 10, 13, 45, 7))
    assert balance.next_reset_at == utc(2026, 6, 10, 13, 45, 7)


def test_next_reset_at_of_non_utc_input_is_utc() -> None:
    # 2026-05-01T01:00+05:00 is 2026-04-30T20:00Z: the anniversary is computed in UTC.
    last = datetime(2026, 5, 1, 1, 0, tzinfo=timezone(timedelta(hours=5)))
    result = next_anniversary(last, 1)

    assert result == utc(2026, 5, 1, 20, 0)
    assert result.utcoffset() == timedelta(0)
    assert is_pendulum_utc(result)


def test_next_reset_at_is_strictly_after_even_a_moment_before() -> None:
    # The same day, a second earlier than the anniversary time: that anniversary is still ahead.
    assert next_anniversary(utc(2026, 5, 14, 23, 59, 59), 15) == utc(2026, 5, 15, 23, 59, 59)
    # Exactly on the anniversary: the next one is a month later, never the same instant.
    assert next_anniversary(utc(2026, 5, 15), 15) == utc(2026, 6, 15)


@pytest.mark.parametrize("reset_day", [0, 32, -1])
def test_next_anniversary_rejects_impossible_reset_day(reset_day: int) -> None:
    with pytest.raises(ValueError, match="reset_day"):
        next_anniversary(utc(2026, 5, 1), reset_day)


_OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_AWARE_DATETIMES = st.builds(
    lambda naive, tz: naive.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2300, 12, 31)),
    _OFFSETS,
)


def _previous_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(after=_AWARE_DATETIMES, reset_day=st.integers(min_value=1, max_value=31))
def test_next_anniversary_properties(after: datetime, reset_day: int) -> None:
    result = next_anniversary(after, reset_day)
    after_utc = after.astimezone(UTC)

    assert is_pendulum_utc(result)
    assert result > after
    # The longest gap between two anniversaries is the longest month: 31 days.
    assert result - after <= timedelta(days=31)
    assert result.day == min(reset_day, calendar.monthrange(result.year, result.month)[1])
    assert result.time() == after_utc.time()
    # It is the FIRST anniversary after `after`: the one a month earlier is not after it.
    prev_year, prev_month = _previous_month(result.year, result.month)
    previous = result.replace(
        year=prev_year, month=prev_month, day=min(reset_day, calendar.monthrange(prev_year, prev_month)[1])
    )
    assert previous <= after_utc


# ---------------------------------------------------------------------------------------------
# CreditTransaction / TransactionPage
# ---------------------------------------------------------------------------------------------


def test_transaction_page_from_documented_example() -> None:
    page = TransactionPage.from_api(TRANSACTIONS_DATA, TRANSACTIONS_META)

    assert page.total == 28
    assert page.limit == 50
    assert page.offset == 0
    assert page.items == (
        CreditTransaction(
            id="txn_abc123",
            type="DEDUCTION",
            amount=-12,
            description="Lead search: Dentists in Austin, TX (97 results)",
            created_at=utc(2026, 5, 5, 10, 1),
        ),
        CreditTransaction(
            id="txn_def456",
            type="MONTHLY_RESET",
            amount=100,
            description="Monthly credit reset",
            created_at=utc(2026, 5, 1),
        ),
    )
    assert all(is_pendulum_utc(t.created_at) for t in page.items)
    # total 28 but only 2 returned from offset 0: the documented example has more pages.
    assert page.has_more is True


def test_transaction_page_to_dict_is_json_serialisable() -> None:
    result = TransactionPage.from_api(TRANSACTIONS_DATA, TRANSACTIONS_META).to_dict()

    assert json.loads(json.dumps(result)) == result
    assert result["items"][0] == {
        "id": "txn_abc123",
        "type": "DEDUCTION",
        "amount": -12,
        "description": "Lead search: Dentists in Austin, TX (97 results)",
        "created_at": "2026-05-05T10:01:00Z",
    }
    assert (result["total"], result["limit"], result["offset"]) == (28, 50, 0)


@pytest.mark.parametrize(
    ("count", "total", "offset", "expected"),
    [
        (2, 28, 0, True),
        (2, 2, 0, False),
        (0, 0, 0, False),
        (2, 10, 8, False),
        (2, 11, 8, True),
        (0, 5, 10, False),  # offset past the end
    ],
)
def test_transaction_page_has_more(count: int, total: int, offset: int, expected: bool) -> None:
    page = TransactionPage.from_api(TRANSACTIONS_DATA[:count], {"total": total, "limit": 50, "offset": offset})
    assert page.has_more is expected


def test_transaction_page_with_more_items_than_limit_is_refused() -> None:
    with pytest.raises(LocalLeadsResponseError, match=r"data has 2 items, more than meta\.limit=1"):
        TransactionPage.from_api(TRANSACTIONS_DATA, {"total": 28, "limit": 1, "offset": 0})


@pytest.mark.parametrize("data", [None, {}, "[]", 2, {"0": TRANSACTIONS_DATA[0]}], ids=repr)
def test_transaction_page_data_not_a_list_is_refused(data: object) -> None:
    with pytest.raises(LocalLeadsResponseError, match=r"body\.data must be a JSON array"):
        TransactionPage.from_api(data, TRANSACTIONS_META)


@pytest.mark.parametrize("meta", [None, [], "meta"], ids=repr)
def test_transaction_page_meta_not_an_object_is_refused(meta: object) -> None:
    with pytest.raises(LocalLeadsResponseError, match=r"meta must be a JSON object"):
        TransactionPage.from_api(TRANSACTIONS_DATA, meta)


@pytest.mark.parametrize("field", ["total", "limit", "offset"])
def test_transaction_page_missing_meta_field_is_named(field: str) -> None:
    meta = dict(TRANSACTIONS_META)
    del meta[field]
    with pytest.raises(LocalLeadsResponseError, match=rf"meta\.{field} is missing"):
        TransactionPage.from_api(TRANSACTIONS_DATA, meta)


@pytest.mark.parametrize("field", ["total", "limit", "offset"])
@pytest.mark.parametrize("bad", ["28", True, 1.5, None, []], ids=repr)
def test_transaction_page_mistyped_meta_field_is_named(field: str, bad: object) -> None:
    with pytest.raises(LocalLeadsResponseError, match=rf"meta\.{field} must be an integer"):
        TransactionPage.from_api(TRANSACTIONS_DATA, {**TRANSACTIONS_META, field: bad})


@pytest.mark.parametrize(("field", "bad"), [("total", -1), ("limit", 0), ("offset", -1)])
def test_transaction_page_out_of_range_meta_is_refused(field: str, bad: int) -> None:
    with pytest.raises(LocalLeadsResponseError, match=rf"meta\.{field} must be >="):
        TransactionPage.from_api([], {**TRANSACTIONS_META, field: bad})


@pytest.mark.parametrize("field", ["id", "type", "amount", "description", "createdAt"])
def test_transaction_missing_field_names_its_index(field: str) -> None:
    second = copy.deepcopy(TRANSACTIONS_DATA[1])
    del second[field]
    with pytest.raises(LocalLeadsResponseError, match=rf"data\[1\]\.{field} is missing"):
        TransactionPage.from_api([TRANSACTIONS_DATA[0], second], TRANSACTIONS_META)


@pytest.mark.parametrize("bad", NOT_INTEGERS, ids=repr)
def test_transaction_mistyped_amount_is_named(bad: object) -> None:
    with pytest.raises(LocalLeadsResponseError, match=r"data\[0\]\.amount must be an integer"):
        TransactionPage.from_api([transaction_data(amount=bad)], TRANSACTIONS_META)


@pytest.mark.parametrize("field", ["id", "type", "description", "createdAt"])
@pytest.mark.parametrize("bad", NOT_STRINGS, ids=repr)
def test_transaction_mistyped_string_field_is_named(field: str, bad: object) -> None:
    with pytest.raises(LocalLeadsResponseError, match=rf"data\[\]\.{field} must be a string"):
        CreditTransaction.from_api(transaction_data(**{field: bad}))


@pytest.mark.parametrize("field", ["id", "type"])
def test_transaction_empty_id_or_type_is_refused(field: str) -> None:
    with pytest.raises(LocalLeadsResponseError, match=rf"data\[\]\.{field} must not be empty"):
        CreditTransaction.from_api(transaction_data(**{field: ""}))


def test_transaction_empty_description_is_accepted() -> None:
    assert CreditTransaction.from_api(transaction_data(description="")).description == ""


def test_transaction_unknown_type_and_extra_fields_are_kept_or_ignored() -> None:
    txn = CreditTransaction.from_api(transaction_data(type="REFUND", amount=7, metadata={"searchId": "s1"}))
    assert txn.type == "REFUND"
    assert txn.amount == 7


@pytest.mark.parametrize("raw", ["2026-05-05T10:01:00", "2026-05-05", "not a date"])
def test_transaction_bad_timestamp_is_refused(raw: str) -> None:
    with pytest.raises(LocalLeadsResponseError, match=r"data\[\]\.createdAt"):
        CreditTransaction.from_api(transaction_data(createdAt=raw))


def test_transaction_and_page_are_frozen() -> None:
    page = TransactionPage.from_api(TRANSACTIONS_DATA, TRANSACTIONS_META)
    with pytest.raises(dataclasses.FrozenInstanceError):
        page.total = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        page.items[0].amount = 0  # type: ignore[misc]


def test_midnight_is_kept_for_api_timestamps() -> None:
    balance = CreditBalance.from_api(BALANCE_DATA)
    assert balance.next_reset_at.time() == time(0, 0)


@pytest.mark.parametrize("raw", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_balance_timestamp_outside_utc_range_is_named(raw: str) -> None:
    with pytest.raises(LocalLeadsResponseError, match=r"data\.lastResetAt is out of range in UTC"):
        CreditBalance.from_api(balance_data(lastResetAt=raw))
