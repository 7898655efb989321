"""Which failures are retried and how long to wait: one decision, for the hook, the sensor and the trigger.

Backoff has jitter so that workers that failed together do not come back together. The loops are
tenacity's; the deadline and each attempt's budget (the time left) are on one monotonic clock, so a
call's total time is bounded whatever the server does.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, Protocol, TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception

from airflow_provider_localleads.client.values import ascii_digits
from airflow_provider_localleads.exceptions import LocalLeadsError, LocalLeadsRateLimitError, LocalLeadsServerError

T = TypeVar("T")


class _Log(Protocol):  # stdlib's or Airflow's structlog-based logger
    def warning(self, msg: Any, /, *args: Any) -> Any: ...


def is_transient(error: BaseException) -> bool:
    """Whether trying again later may succeed: retried by the hook, waited through by sensor and trigger."""
    return isinstance(error, LocalLeadsError) and error.transient


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After (delta-seconds or HTTP date); None for garbage, negative values and
    past dates, so the caller falls back to its backoff rather than hammering the server with no wait."""
    if value is None:
        return None
    digits = ascii_digits(value)
    if digits is not None:
        return float(digits)  # float, not int: 400 digits are an infinite wait, not an error
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return seconds if seconds > 0 else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    #: Retries after the first attempt (the connection's ``max_retries`` extra).
    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    #: The longest Retry-After we will sleep through; longer ones fail at once, carrying it.
    max_retry_after: float = 120.0
    #: Seconds one call may take in total, retries and waits included.
    deadline: float = 120.0

    @property
    def attempts(self) -> int:
        return self.max_retries + 1

    def backoff(self, attempt: int) -> float:
        """After failed attempt ``attempt`` (1-based): half fixed, half random."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def wait(self, attempt: int, error: LocalLeadsError) -> float:
        return error.retry_after if error.retry_after is not None else self.backoff(attempt)

    def gives_up(self, attempt: int, error: LocalLeadsError, elapsed_after_wait: float) -> bool:
        too_long = error.retry_after is not None and error.retry_after > self.max_retry_after
        return attempt >= self.attempts or too_long or elapsed_after_wait >= self.deadline

    def final_error(self, error: LocalLeadsError, attempt: int, elapsed: float = 0.0) -> LocalLeadsError:
        """A Retry-After longer than this call will wait fails at once; the message then says how long the
        server asked for, so the on-call engineer knows whether to re-run now or in an hour."""
        willing = min(self.max_retry_after, max(self.deadline - elapsed, 0.0))
        if error.retry_after is None or error.retry_after <= willing or attempt >= self.attempts:
            return error
        if isinstance(error, LocalLeadsRateLimitError):
            message = (
                f"The LocalLeads API is rate limiting this key and asked us to wait {error.retry_after:.0f} s, "
                f"longer than the {willing:.0f} s this call will wait; run it later, or space "
                "out the tasks that share this API key"
            )
        elif isinstance(error, LocalLeadsServerError):
            message = (
                f"The LocalLeads API asked us to come back in {error.retry_after:.0f} s (Retry-After), longer "
                f"than the {willing:.0f} s this call will wait: run it again after that. {error.summary}"
            )
        else:
            return error
        return type(error)(
            message,
            retry_after=error.retry_after,
            path=error.path,
            status_code=error.http_status,
            request_id=error.request_id,
        )


def _strategy(policy: RetryPolicy, log: _Log) -> tuple[dict[str, Any], Callable[[], float]]:
    """tenacity's arguments for one call of ``policy``, and the call's time left; its clock starts now."""
    start = time.monotonic()

    def error_of(state: RetryCallState) -> LocalLeadsError:
        assert state.outcome is not None
        error = state.outcome.exception()
        assert isinstance(error, LocalLeadsError)  # the retry predicate only lets these through
        return error

    def stop(state: RetryCallState) -> bool:
        elapsed_after_wait = time.monotonic() - start + state.upcoming_sleep
        return policy.gives_up(state.attempt_number, error_of(state), elapsed_after_wait)

    def log_retry(state: RetryCallState) -> None:
        log.warning(
            "%s; retrying in %.1f s (attempt %d of %d)",
            error_of(state),
            state.upcoming_sleep,
            state.attempt_number + 1,
            policy.attempts,
        )

    def give_up(state: RetryCallState) -> NoReturn:
        error = error_of(state)
        raise policy.final_error(error, state.attempt_number, time.monotonic() - start) from error.__cause__

    def seconds_left() -> float:
        return max(policy.deadline - (time.monotonic() - start), 0.001)

    strategy = {
        "retry": retry_if_exception(is_transient),
        "wait": lambda state: policy.wait(state.attempt_number, error_of(state)),
        "stop": stop,
        "before_sleep": log_retry,
        "retry_error_callback": give_up,
    }
    return strategy, seconds_left


def call_with_retries(
    policy: RetryPolicy,
    attempt_once: Callable[[float], T],
    *,
    log: _Log,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    strategy, seconds_left = _strategy(policy, log)
    result: T = Retrying(sleep=sleep, **strategy)(lambda: attempt_once(seconds_left()))
    return result


async def acall_with_retries(
    policy: RetryPolicy,
    attempt_once: Callable[[float], Awaitable[T]],
    *,
    log: _Log,
) -> T:
    """The asynchronous twin of :func:`call_with_retries`; it only ever sleeps with asyncio."""
    strategy, seconds_left = _strategy(policy, log)

    async def attempt() -> T:  # tenacity awaits only what a coroutine function returns
        return await attempt_once(seconds_left())

    result: T = await AsyncRetrying(sleep=asyncio.sleep, **strategy)(attempt)
    return result
