"""Keeping the API key where it belongs: in one request header, and nowhere else.

* :class:`BearerAuth` puts it in ``Authorization`` for one request (an auth object, so ``~/.netrc``
  cannot replace it) and shows ``***`` in its repr.
* :func:`register_key` redacts it from the HTTP libraries' own DEBUG log records.
* :func:`strip_requests` removes the request objects (their headers hold the key) that requests and
  httpx hang on their exceptions, before those become our errors' causes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import requests
from requests.auth import AuthBase


class BearerAuth(AuthBase):
    """Sets ``Authorization: Bearer <key>``; as an auth object it also stops ``~/.netrc`` from replacing it."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._api_key}"
        return request

    def __repr__(self) -> str:
        return "<BearerAuth ***>"


class _KeyRedactingFilter(logging.Filter):
    """Removes the API keys this process uses from the HTTP libraries' own log records.

    httpcore logs the *response* headers at DEBUG: a proxy echoing the ``Authorization`` header back
    would put the key into the log of whoever turned DEBUG on, and not every handler is Airflow's
    (which masks connection passwords). Costs nothing unless those loggers are enabled at DEBUG.
    """

    LOGGERS = (
        "httpx",
        "httpcore.connection",
        "httpcore.http11",
        "httpcore.http2",
        "httpcore.proxy",
        "httpcore.socks",
        "urllib3.connectionpool",
        "urllib3.connection",
        "urllib3.response",
    )

    def __init__(self) -> None:
        super().__init__()
        self._keys: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._installed = False

    def register(self, key: str) -> None:
        if key in self._keys and self._installed:
            return
        with self._lock:
            self._keys = self._keys | {key}
            if not self._installed:
                for name in self.LOGGERS:
                    logging.getLogger(name).addFilter(self)
                self._installed = True

    def filter(self, record: logging.LogRecord) -> bool:
        keys = self._keys
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is the logging module's business, not ours
            return True
        if any(key in message for key in keys):
            for key in keys:
                message = message.replace(key, "***")
            record.msg, record.args = message, None
        return True


_REDACT_LOGS = _KeyRedactingFilter()
#: Redact this key from the HTTP libraries' DEBUG logs (the hook calls it for every key it uses).
register_key = _REDACT_LOGS.register


def exception_chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and every exception it was raised from or during, once each (plus urllib3's reasons)."""
    seen: set[int] = set()
    pending: list[BaseException] = [err]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nested in (
            current.__cause__ or current.__context__,
            getattr(current, "reason", None),  # urllib3's MaxRetryError keeps its cause here
            *(current.args[:1] if isinstance(current, requests.exceptions.RequestException) else ()),
        ):
            if isinstance(nested, BaseException):
                pending.append(nested)


def strip_requests(err: BaseException) -> None:
    """Drop the request/response objects that requests and httpx hang on their exceptions.

    They hold the ``Authorization`` header; the exception stays our error's cause, for its type and
    message, but must not carry the key into error trackers or pickles.
    """
    for current in exception_chain(err):
        if isinstance(current, requests.exceptions.RequestException):
            current.request = None
            current.response = None
        elif hasattr(current, "_request"):  # httpx.RequestError
            with contextlib.suppress(AttributeError, TypeError):
                current._request = None
