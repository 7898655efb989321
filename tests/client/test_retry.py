"""Unit tests for the retry policy shared by the hook and the trigger (``_retry.py``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_localleads.client import retry as _retry
from airflow_provider_localleads.client.retry import (
    RetryPolicy,
    acall_with_retries,
    call_with_retries,
    parse_retry_after,
)
from airflow_provider_localleads.exceptions import (
    LocalLeadsAuthenticationError,
    LocalLeadsConnectionError,
    LocalLeadsError,
    LocalLeadsRateLimitError,
    LocalLeadsRequestError,
    LocalLeadsResponseError,
    LocalLeadsServerError,
    LocalLeadsTLSError,
)

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
PATH = "/api/v1/credits/balance"


class RecordingLog:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def warning(self, msg: object, /, *args: object) -> None:
        self.messages.append(str(msg) % args)


class FakeClock:
    """A monotonic clock that only moves when the fake ``sleep`` is called."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@pytest.fixture
def max_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the jitter deterministic: always the top of its range (wait == ceiling)."""
    monkeypatch.setattr(_retry.random, "uniform", lambda low, high: high)


Decide = Callable[..., float | None]


@pytest.fixture
def decide(monkeypatch: pytest.MonkeyPatch) -> Decide:
    """What call_with_retries decides after ``error`` ends its first attempt ``elapsed`` seconds into
    the call: the wait before the next attempt, or None if it gives up (raising). The clock and the
    sleep are fakes; the decision is production's (retry predicate, RetryPolicy.wait and gives_up)."""
    clock = FakeClock()
    monkeypatch.setattr(_retry, "time", SimpleNamespace(monotonic=clock.monotonic))

    def run(policy: RetryPolicy, error: LocalLeadsError, elapsed: float = 0.0) -> float | None:
        clock.waits.clear()
        outcomes: list[object] = [error, "next attempt"]

        def attempt(seconds_left: float) -> object:
            outcome = outcomes.pop(0)
            if isinstance(outcome, BaseException):
                clock.now += elapsed
                raise outcome
            return outcome

        try:
            call_with_retries(policy, attempt, log=RecordingLog(), sleep=clock.sleep)
        except LocalLeadsError:
            assert clock.waits == []  # giving up never sleeps first
            return None
        (wait,) = clock.waits
        return wait

    return run


def server_error(n: int = 0) -> LocalLeadsServerError:
    return LocalLeadsServerError(f"server error #{n}", path=PATH, status_code=503)


def rate_limited(retry_after: float | None) -> LocalLeadsRateLimitError:
    return LocalLeadsRateLimitError(
        "rate limited", path=PATH, status_code=429, request_id="req-42", retry_after=retry_after
    )


# ---------------------------------------------------------------------------------------------
# parse_retry_after
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("5", 5.0), (" 7 ", 7.0), ("120", 120.0), ("0", 0.0)])
def test_parse_retry_after_delta_seconds(value: str, expected: float) -> None:
    # "0" is a valid delta-seconds (RFC 9110: retry at once) and is returned as 0.0: the server's own
    # word, so an immediate retry is made; the attempt count and deadline still bound the loop.
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date_in_the_future() -> None:
    header = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert header == "Fri, 01 May 2026 12:00:30 GMT"
    assert parse_retry_after(header, now=NOW) == pytest.approx(30.0)


def test_parse_retry_after_http_date_without_zone_is_utc() -> None:
    # asctime format carries no zone; HTTP dates are always GMT.
    assert parse_retry_after("Fri May  1 12:01:00 2026", now=NOW) == pytest.approx(60.0)


def test_parse_retry_after_http_date_with_numeric_offset() -> None:
    assert parse_retry_after("Fri, 01 May 2026 14:00:10 +0200", now=NOW) == pytest.approx(10.0)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(format_datetime(NOW - timedelta(seconds=5), usegmt=True), id="date-in-the-past"),
        pytest.param(format_datetime(NOW, usegmt=True), id="date-now"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", id="date-long-ago"),
        pytest.param("soon", id="garbage"),
        pytest.param("-3", id="negative"),
        pytest.param("1.5", id="fraction-not-allowed-by-rfc"),
        pytest.param("5 seconds", id="with-unit"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(None, id="none"),
        pytest.param("Fri, 99 May 2026 12:00:30 GMT", id="impossible-date"),
    ],
)
def test_parse_retry_after_unusable_values_are_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_huge_number_is_larger_than_any_limit() -> None:
    assert parse_retry_after("9" * 400) == float("inf")


def test_parse_retry_after_non_ascii_digit_is_none() -> None:
    assert parse_retry_after("²") is None


# ---------------------------------------------------------------------------------------------
# RetryPolicy.backoff / wait / gives_up / final_error (through call_with_retries where they combine)
# ---------------------------------------------------------------------------------------------


def test_attempts_is_retries_plus_one() -> None:
    assert RetryPolicy(max_retries=0).attempts == 1
    assert RetryPolicy(max_retries=3).attempts == 4


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (10, 8.0)]
)
def test_backoff_grows_exponentially_and_is_capped(
    monkeypatch: pytest.MonkeyPatch, attempt: int, ceiling: float
) -> None:
    policy = RetryPolicy()
    monkeypatch.setattr(_retry.random, "uniform", lambda low, high: high)
    assert policy.backoff(attempt) == pytest.approx(ceiling)
    monkeypatch.setattr(_retry.random, "uniform", lambda low, high: low)
    assert policy.backoff(attempt) == pytest.approx(ceiling / 2)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(attempt=st.integers(min_value=1, max_value=60))
def test_backoff_jitter_stays_within_half_ceiling_and_ceiling(attempt: int) -> None:
    policy = RetryPolicy()
    ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
    wait = policy.backoff(attempt)
    assert ceiling / 2 <= wait <= ceiling


@pytest.mark.parametrize(
    "error",
    [
        LocalLeadsAuthenticationError("bad key", status_code=401),
        LocalLeadsRequestError("bad request", status_code=400),
        LocalLeadsResponseError("not json", status_code=200),
        LocalLeadsTLSError("bad certificate"),
        LocalLeadsError("generic"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_decision_gives_up_at_once_on_permanent_errors(error: LocalLeadsError, decide: Decide) -> None:
    assert error.transient is False
    assert decide(RetryPolicy(max_retries=5), error, 0.0) is None


@pytest.mark.parametrize(
    "error",
    [server_error(), rate_limited(None), LocalLeadsConnectionError("refused")],
    ids=lambda e: type(e).__name__,
)
def test_decision_retries_transient_errors(error: LocalLeadsError, max_jitter: None, decide: Decide) -> None:
    assert decide(RetryPolicy(max_retries=2), error, 0.0) == pytest.approx(0.5)


def test_decision_gives_up_when_attempts_are_exhausted(decide: Decide) -> None:
    policy = RetryPolicy(max_retries=2)
    assert not policy.gives_up(2, server_error(), elapsed_after_wait=0.5)
    assert policy.gives_up(3, server_error(), elapsed_after_wait=0.5)
    assert decide(RetryPolicy(max_retries=0), server_error(), 0.0) is None


def test_decision_honours_retry_after(decide: Decide) -> None:
    policy = RetryPolicy(max_retries=2)
    assert decide(policy, rate_limited(7.0), 0.0) == 7.0
    # Retry-After on a 503 is honoured too.
    error = LocalLeadsServerError("down", status_code=503, retry_after=3.0)
    assert decide(policy, error, 0.0) == 3.0


def test_decision_retry_after_at_the_limit_is_honoured(decide: Decide) -> None:
    policy = RetryPolicy(max_retry_after=120.0, deadline=1000.0)
    assert decide(policy, rate_limited(120.0), 0.0) == 120.0


def test_default_policy_retry_after_reaching_the_deadline_gives_up_with_the_servers_error(decide: Decide) -> None:
    # Documents current behaviour: with the defaults (max_retry_after == deadline == 120 s) a Retry-After
    # the deadline cannot fit is not rewritten by final_error; the 429 error still carries retry_after.
    policy = RetryPolicy()
    error = rate_limited(120.0)
    assert decide(policy, error, 0.0) is None
    assert policy.final_error(error, 1) is error
    assert error.retry_after == 120.0


def test_decision_retry_after_zero_retries_at_once(decide: Decide) -> None:
    assert decide(RetryPolicy(), rate_limited(0.0), 0.0) == 0.0


def test_retry_after_above_the_limit_gives_up_with_an_explicit_error(decide: Decide) -> None:
    policy = RetryPolicy(max_retries=5, max_retry_after=120.0)
    error = rate_limited(300.0)

    assert decide(policy, error, 0.0) is None
    final = policy.final_error(error, 1)

    assert isinstance(final, LocalLeadsRateLimitError)
    assert final.retry_after == 300.0
    assert final.path == PATH
    assert final.http_status == 429
    assert final.request_id == "req-42"
    assert final.transient is True
    message = str(final)
    assert "300 s" in message
    assert "120 s" in message
    assert "HTTP 429" in message


def test_final_error_returns_other_errors_unchanged(decide: Decide) -> None:
    policy = RetryPolicy(max_retry_after=120.0)
    for error in (server_error(), rate_limited(5.0), rate_limited(None), LocalLeadsAuthenticationError("x")):
        assert policy.final_error(error, 3) is error
    # A 503's long Retry-After gives up too: it stays a server error, and now says how long it asked for.
    long_503 = LocalLeadsServerError("down", status_code=503, retry_after=600.0, request_id="r-1")
    assert decide(policy, long_503, 0.0) is None
    final = policy.final_error(long_503, 1)
    assert type(final) is LocalLeadsServerError
    assert (final.retry_after, final.http_status, final.request_id, final.transient) == (600.0, 503, "r-1", True)
    assert str(final) == (
        "The LocalLeads API asked us to come back in 600 s (Retry-After), longer than the 120 s this call will "
        "wait: run it again after that. down [HTTP 503, request id r-1]"
    )


def test_decision_respects_the_deadline(max_jitter: None, decide: Decide) -> None:
    policy = RetryPolicy(max_retries=10, deadline=10.0)
    assert decide(policy, server_error(), 9.0) == pytest.approx(0.5)
    assert decide(policy, server_error(), 9.5) is None  # 9.5 + 0.5 reaches the deadline
    assert decide(policy, rate_limited(5.0), 4.0) == 5.0
    assert decide(policy, rate_limited(5.0), 5.0) is None


# ---------------------------------------------------------------------------------------------
# call_with_retries
# ---------------------------------------------------------------------------------------------


def scripted(outcomes: list[object]) -> tuple[Callable[[float], object], list[float]]:
    """An attempt function raising or returning ``outcomes`` in order; records seconds_left."""
    seen: list[float] = []
    remaining = list(outcomes)

    def attempt(seconds_left: float) -> object:
        seen.append(seconds_left)
        outcome = remaining.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return attempt, seen


def test_call_with_retries_succeeds_after_transient_failures(max_jitter: None) -> None:
    attempt, seen = scripted([server_error(1), LocalLeadsConnectionError("reset"), {"ok": True}])
    waits: list[float] = []
    log = RecordingLog()

    result = call_with_retries(RetryPolicy(max_retries=3), attempt, log=log, sleep=waits.append)

    assert result == {"ok": True}
    assert len(seen) == 3
    assert waits == [pytest.approx(0.5), pytest.approx(1.0)]
    assert len(log.messages) == 2
    assert "retrying in 0.5 s (attempt 2 of 4)" in log.messages[0]
    assert "server error #1" in log.messages[0]


def test_call_with_retries_stops_at_once_on_authentication_error() -> None:
    auth = LocalLeadsAuthenticationError("bad key", status_code=401, path=PATH)
    attempt, seen = scripted([auth, {"never": "reached"}])
    waits: list[float] = []

    with pytest.raises(LocalLeadsAuthenticationError) as info:
        call_with_retries(RetryPolicy(max_retries=5), attempt, log=RecordingLog(), sleep=waits.append)

    assert info.value is auth
    assert len(seen) == 1
    assert waits == []


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_call_with_retries_stops_after_max_retries_plus_one_calls(max_retries: int) -> None:
    errors = [server_error(n) for n in range(max_retries + 1)]
    attempt, seen = scripted([*errors, {"never": "reached"}])
    waits: list[float] = []

    with pytest.raises(LocalLeadsServerError) as info:
        call_with_retries(RetryPolicy(max_retries=max_retries), attempt, log=RecordingLog(), sleep=waits.append)

    assert len(seen) == max_retries + 1
    assert len(waits) == max_retries
    assert info.value is errors[-1]


def test_call_with_retries_honours_retry_after() -> None:
    attempt, _ = scripted([rate_limited(3.0), rate_limited(1.0), "done"])
    waits: list[float] = []
    assert call_with_retries(RetryPolicy(max_retries=2), attempt, log=RecordingLog(), sleep=waits.append) == "done"
    assert waits == [3.0, 1.0]


def test_call_with_retries_too_long_retry_after_fails_at_once() -> None:
    attempt, seen = scripted([rate_limited(3600.0), "never"])
    waits: list[float] = []

    with pytest.raises(LocalLeadsRateLimitError) as info:
        call_with_retries(RetryPolicy(max_retries=5), attempt, log=RecordingLog(), sleep=waits.append)

    assert len(seen) == 1
    assert waits == []
    assert info.value.retry_after == 3600.0
    assert "3600 s" in str(info.value)


def test_call_with_retries_respects_the_deadline(monkeypatch: pytest.MonkeyPatch, max_jitter: None) -> None:
    clock = FakeClock()
    monkeypatch.setattr(_retry, "time", SimpleNamespace(monotonic=clock.monotonic))
    errors = [server_error(n) for n in range(10)]
    attempt, seen = scripted(errors)

    with pytest.raises(LocalLeadsServerError) as info:
        call_with_retries(RetryPolicy(max_retries=9, deadline=5.0), attempt, log=RecordingLog(), sleep=clock.sleep)

    # Waits 0.5 + 1 + 2 = 3.5 s; the next (4 s) would end past the 5 s deadline.
    assert clock.waits == [0.5, 1.0, 2.0]
    assert len(seen) == 4
    assert seen == [pytest.approx(5.0), pytest.approx(4.5), pytest.approx(3.5), pytest.approx(1.5)]
    assert info.value is errors[3]


def test_call_with_retries_does_not_catch_foreign_exceptions() -> None:
    attempt, seen = scripted([KeyError("bug"), "never"])
    with pytest.raises(KeyError):
        call_with_retries(RetryPolicy(max_retries=3), attempt, log=RecordingLog(), sleep=lambda _: None)
    assert len(seen) == 1


def test_call_with_retries_keeps_the_original_cause(max_jitter: None) -> None:
    cause = OSError("connection reset by peer")
    try:
        raise LocalLeadsConnectionError("reset") from cause
    except LocalLeadsConnectionError as err:
        error = err

    attempt, _ = scripted([error])
    with pytest.raises(LocalLeadsConnectionError) as info:
        call_with_retries(RetryPolicy(max_retries=0), attempt, log=RecordingLog(), sleep=lambda _: None)
    assert info.value.__cause__ is cause


# ---------------------------------------------------------------------------------------------
# acall_with_retries
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def async_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record asyncio sleeps instead of waiting, and make any blocking time.sleep fail the test."""
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float, result: object = None) -> object:
        waits.append(seconds)
        await real_sleep(0)
        return result

    def forbidden_sleep(seconds: float) -> None:
        raise AssertionError(f"time.sleep({seconds}) called from async code")

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    monkeypatch.setattr(time, "sleep", forbidden_sleep)
    return waits


def async_scripted(outcomes: list[object]) -> tuple[Callable[[float], object], list[float]]:
    seen: list[float] = []
    remaining = list(outcomes)

    async def attempt(seconds_left: float) -> object:
        seen.append(seconds_left)
        outcome = remaining.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return attempt, seen


def test_acall_with_retries_succeeds_after_transient_failures(async_waits: list[float], max_jitter: None) -> None:
    attempt, seen = async_scripted([server_error(1), rate_limited(2.0), {"ok": True}])
    log = RecordingLog()

    result = asyncio.run(acall_with_retries(RetryPolicy(max_retries=3), attempt, log=log))

    assert result == {"ok": True}
    assert len(seen) == 3
    assert all(0 < s <= 120.0 for s in seen)
    assert async_waits == [pytest.approx(0.5), 2.0]
    assert len(log.messages) == 2


def test_acall_with_retries_stops_at_once_on_authentication_error(async_waits: list[float]) -> None:
    auth = LocalLeadsAuthenticationError("bad key", status_code=403)
    attempt, seen = async_scripted([auth, "never"])

    with pytest.raises(LocalLeadsAuthenticationError) as info:
        asyncio.run(acall_with_retries(RetryPolicy(max_retries=5), attempt, log=RecordingLog()))

    assert info.value is auth
    assert len(seen) == 1
    assert async_waits == []


@pytest.mark.parametrize("max_retries", [0, 2])
def test_acall_with_retries_stops_after_max_retries_plus_one_calls(async_waits: list[float], max_retries: int) -> None:
    errors = [server_error(n) for n in range(max_retries + 1)]
    attempt, seen = async_scripted([*errors, "never"])

    with pytest.raises(LocalLeadsServerError) as info:
        asyncio.run(acall_with_retries(RetryPolicy(max_retries=max_retries), attempt, log=RecordingLog()))

    assert len(seen) == max_retries + 1
    assert len(async_waits) == max_retries
    assert info.value is errors[-1]


def test_acall_with_retries_too_long_retry_after_fails_at_once(async_waits: list[float]) -> None:
    attempt, seen = async_scripted([rate_limited(500.0), "never"])

    with pytest.raises(LocalLeadsRateLimitError) as info:
        asyncio.run(acall_with_retries(RetryPolicy(max_retries=5), attempt, log=RecordingLog()))

    assert len(seen) == 1
    assert async_waits == []
    assert info.value.retry_after == 500.0


def test_acall_with_retries_lets_other_tasks_run_while_waiting(async_waits: list[float], max_jitter: None) -> None:
    ticks: list[int] = []

    async def ticker() -> None:
        for n in range(3):
            ticks.append(n)
            await asyncio.sleep(0)

    async def main() -> object:
        attempt, _ = async_scripted([server_error(), server_error(), "done"])
        task = asyncio.create_task(ticker())
        result = await acall_with_retries(RetryPolicy(max_retries=2), attempt, log=RecordingLog())
        await task
        return result

    assert asyncio.run(main()) == "done"
    assert ticks == [0, 1, 2]
