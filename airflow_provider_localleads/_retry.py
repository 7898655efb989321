"""One retry policy for the synchronous hook and the asynchronous trigger.

Retried: 408, 429, 5xx, connection errors, timeouts and bodies cut short (all ``transient``
LocalLeadsErrors). Not retried: other 4xx, TLS failures, and answers we cannot parse. Waits grow
exponentially (0.5 s, 1 s, 2 s, ... capped at 8 s) with jitter, so many workers that failed together
do not come back together; a server's Retry-After wins when it is usable. Every call also has an
overall deadline, so the total time spent is bounded whatever the server does.

The two loops (``call_with_retries`` / ``acall_with_retries``) are thin: every decision is in
``RetryPolicy.next_wait`` so the sync and async paths cannot disagree. (tenacity splits "stop" from
"wait"; here the Retry-After, the deadline and the attempt count decide together, in one place.)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

from airflow_provider_localleads.exceptions import LocalLeadsError, LocalLeadsRateLimitError, LocalLeadsServerError

T = TypeVar("T")


class _Log(Protocol):
    """Any logger (stdlib or Airflow's structlog-based one) with a ``warning`` method."""

    def warning(self, msg: Any, /, *args: Any) -> Any: ...


RETRYABLE_STATUS_CODES = frozenset({408, 429, *range(500, 600)})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if unusable.

    Garbage, negative values and dates in the past are unusable: the caller falls back to its own
    backoff rather than hammering the server with no wait at all.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
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
    """How often and how long to retry one API call."""

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
        """Wait after failed attempt number ``attempt`` (1-based): half fixed, half random."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def next_wait(self, attempt: int, error: LocalLeadsError, elapsed: float) -> float | None:
        """Seconds to wait before the next attempt, or None to give up and raise ``error``."""
        if not error.transient or attempt >= self.attempts:
            return None
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            wait = error.retry_after
        else:
            wait = self.backoff(attempt)
        if elapsed + wait >= self.deadline:
            return None
        return wait

    def final_error(self, error: LocalLeadsError, attempt: int, elapsed: float = 0.0) -> LocalLeadsError:
        """The error to raise when giving up, with a Retry-After that was too long made explicit.

        A 429 or a 503 whose Retry-After is longer than this call will wait fails at once (no point
        in hammering it); the message then says how long the server asked for, so the on-call
        engineer knows whether to re-run now or in an hour.
        """
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


def _log_retry(log: _Log, error: LocalLeadsError, attempt: int, policy: RetryPolicy, wait: float) -> None:
    log.warning("%s; retrying in %.1f s (attempt %d of %d)", error, wait, attempt + 1, policy.attempts)


def call_with_retries(
    policy: RetryPolicy,
    attempt_once: Callable[[float], T],
    *,
    log: _Log,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``attempt_once(seconds_left)`` until it succeeds or the policy gives up."""
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        elapsed = time.monotonic() - start
        try:
            return attempt_once(max(policy.deadline - elapsed, 0.001))
        except LocalLeadsError as error:
            elapsed = time.monotonic() - start
            wait = policy.next_wait(attempt, error, elapsed)
            if wait is None:
                raise policy.final_error(error, attempt, elapsed) from error.__cause__
            _log_retry(log, error, attempt, policy, wait)
            sleep(wait)


async def acall_with_retries(
    policy: RetryPolicy,
    attempt_once: Callable[[float], Awaitable[T]],
    *,
    log: _Log,
) -> T:
    """The asynchronous twin of :func:`call_with_retries`; it only ever sleeps with asyncio."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await attempt_once(max(policy.deadline - (loop.time() - start), 0.001))
        except LocalLeadsError as error:
            elapsed = loop.time() - start
            wait = policy.next_wait(attempt, error, elapsed)
            if wait is None:
                raise policy.final_error(error, attempt, elapsed) from error.__cause__
            _log_retry(log, error, attempt, policy, wait)
            await asyncio.sleep(wait)
