"""The errors this provider raises, one class per thing an operator on call can do something about.

None contains the API key: messages quote only redacted excerpts of the answer.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class LocalLeadsError(AirflowException):
    """``transient``: whether waiting and asking again may help (the sensor and trigger keep waiting)."""

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.path = path
        self.http_status = status_code
        self.request_id = request_id
        self.retry_after = retry_after
        #: The message without the [HTTP status, path, request id] context appended to str(error).
        self.summary = message
        super().__init__(self._compose(message))

    def _compose(self, message: str) -> str:
        context = []
        if self.http_status is not None:
            context.append(f"HTTP {self.http_status}")
        if self.path:
            context.append(f"GET {self.path}")
        if self.request_id:
            context.append(f"request id {self.request_id}")
        return f"{message} [{', '.join(context)}]" if context else message

    @property
    def error_type(self) -> str:
        """Stable: used in trigger events and metrics."""
        return type(self).__name__

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments break exceptions' default pickling, which Airflow uses (e.g. for callbacks).
        return (_rebuild, (type(self), str(self), self.__dict__.copy()))


def _rebuild(cls: type[LocalLeadsError], message: str, state: dict[str, object]) -> LocalLeadsError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class LocalLeadsConfigurationError(LocalLeadsError):
    """The Airflow connection (or a hook argument) is unusable: fix the connection, then re-run."""


class LocalLeadsAuthenticationError(LocalLeadsError, AirflowFailException):
    """401/403. An ``AirflowFailException``: retrying with the same key cannot succeed, so the task fails
    at once instead of burning its retries."""


class LocalLeadsRequestError(LocalLeadsError):
    """Another 4xx (400, 404, ...): the request itself is wrong; retrying it will not help."""


class LocalLeadsRateLimitError(LocalLeadsError):
    """429 after the hook's retries, or a Retry-After longer than the hook is willing to wait."""

    transient = True


class LocalLeadsServerError(LocalLeadsError):
    """5xx (or 408) after the hook's retries: the API or a proxy in front of it is failing."""

    transient = True


class LocalLeadsConnectionError(LocalLeadsError):
    """The API could not be reached or stopped answering (DNS, refused, reset, timeout, cut body)."""

    transient = True


class LocalLeadsTLSError(LocalLeadsConnectionError):
    """The TLS handshake or certificate check failed: not retried, a retry meets the same certificate."""

    transient = False


class LocalLeadsResponseError(LocalLeadsError):
    """The API answered something we cannot trust: not JSON, ``success: false``, or missing/mistyped fields."""


class LocalLeadsInvalidArgumentError(LocalLeadsError, AirflowFailException):
    """A task argument (e.g. ``estimated_cost``) is invalid: fix the DAG; retrying cannot help."""


class NoCostHistoryError(LocalLeadsInvalidArgumentError):
    """``CostFromHistory`` found no matching run in its lookback and has no ``default``; not retried: a
    retry minutes later reads the same history."""


class InsufficientCreditsError(LocalLeadsError, AirflowFailException):
    """Not enough credits for the planned run; not retried: retrying minutes later would not make credits
    appear (``on_insufficient="skip"`` or ``CreditsSensor`` wait instead of failing)."""
