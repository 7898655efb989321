"""LocalLeadsHook: authenticated, retried, typed access to the LocalLeads Credits API.

One ``requests.Session`` per hook keeps the TCP/TLS connection open across calls. Every request
goes through one retry policy (:mod:`airflow_provider_localleads._retry`) and every attempt has a
hard wall-clock budget: requests' read timeout starts again with every byte received, so a server
that drips one byte a second (even while sending the status line and headers) would otherwise hold
a worker for hours. A per-process watchdog shuts the attempt's socket down when the budget runs
out (see :mod:`airflow_provider_localleads._deadline`); bodies are capped at ``MAX_BODY_BYTES``
(announced or streamed). Answers are parsed into frozen dataclasses
(:mod:`airflow_provider_localleads.models`) or raise a typed
:class:`~airflow_provider_localleads.exceptions.LocalLeadsError`.

The API key is only ever placed in the ``Authorization`` header, by an auth object that also
prevents ``~/.netrc`` from replacing it; redirects are never followed, so the header cannot be
sent to another origin. Exceptions chained under ours are stripped of the request they carried
(its headers hold the key). Nothing is looked up or sent until a method is called: constructing
the hook at DAG-parse time is free.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import requests
import urllib3
from airflow.providers.common.compat.sdk import BaseHook
from requests.auth import AuthBase

from airflow_provider_localleads import CONN_FIELDS, UI_FIELD_BEHAVIOUR, __version__
from airflow_provider_localleads._deadline import AttemptDeadline, WatchedAdapter
from airflow_provider_localleads._responses import (
    MAX_BODY_BYTES,
    excerpt,
    parse_balance,
    parse_transaction_page,
)
from airflow_provider_localleads._retry import RetryPolicy, acall_with_retries, call_with_retries
from airflow_provider_localleads._settings import ConnectionSettings, settings_from_connection
from airflow_provider_localleads._tls import checked_ca_bundle, shared_ssl_context
from airflow_provider_localleads.exceptions import (
    LocalLeadsConnectionError,
    LocalLeadsError,
    LocalLeadsResponseError,
    LocalLeadsTLSError,
)
from airflow_provider_localleads.models import CreditBalance, CreditTransaction, TransactionPage

if TYPE_CHECKING:
    import httpx

BALANCE_PATH = "/api/v1/credits/balance"
TRANSACTIONS_PATH = "/api/v1/credits/transactions"
MAX_PAGE_SIZE = 100
USER_AGENT = f"airflow-provider-localleads/{__version__}"
#: How many reads in a row iter_transactions may spend re-finding its place after the history moved.
_MAX_RELOCATIONS = 24
#: How many ids sharing the last yielded createdAt iter_transactions remembers (its only per-history memory).
_MAX_TIE_IDS = 10_000
_READ_CHUNK = 65536
#: What the 2.11 form accepts for ``timeout``: a positive decimal number of seconds (30, 2.5, .5).
_SECONDS_PATTERN = r"^\s*(?:\d+(?:\.\d*)?|\.\d+)\s*$"

T = TypeVar("T")
#: Turns (status, headers, body) into the call's result or raises a LocalLeadsError.
_Parse = Callable[[int, Mapping[str, str], bytes], T]


class _BearerAuth(AuthBase):
    """Sets ``Authorization: Bearer <key>``.

    Passing an auth object (rather than a header) stops requests from applying ``~/.netrc``
    credentials over it; its repr never shows the key.
    """

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._api_key}"
        return request

    def __repr__(self) -> str:
        return "<_BearerAuth ***>"


def _validate_limit(name: str, value: object) -> int:
    if type(value) is not int or not 1 <= value <= MAX_PAGE_SIZE:
        raise ValueError(f"{name} must be a whole number from 1 to {MAX_PAGE_SIZE}, got {value!r}")
    return value


def _validate_offset(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"offset must be a whole number >= 0, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------- transport


class _KeyRedactingFilter(logging.Filter):
    """Removes the API keys this process uses from the HTTP libraries' own log records.

    httpcore logs the *response* headers at DEBUG: a proxy or server that echoes the
    ``Authorization`` header back (into a header, or a body that gets logged) would otherwise put
    the key into the log of whoever turned DEBUG on. Airflow masks connection passwords in task
    logs, but not every handler is Airflow's, so the key is removed where the record is created.
    Costs nothing unless those loggers are enabled at DEBUG.
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


def _exception_chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and every exception it was raised from or during (``__cause__``/``__context__``), once each."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _strip_requests(err: BaseException) -> None:
    """Drop the request/response objects that requests and httpx hang on their exceptions.

    They hold the ``Authorization`` header; the exception itself is kept as our error's cause, for
    its type and message, but must not carry the key into error trackers or pickles.
    """
    for current in _exception_chain(err):
        if isinstance(current, requests.exceptions.RequestException):
            current.request = None
            current.response = None
        elif hasattr(current, "_request"):  # httpx.RequestError
            with contextlib.suppress(AttributeError, TypeError):
                current._request = None


def _is_tls_failure(err: BaseException) -> bool:
    for current in _exception_chain(err):
        if isinstance(current, ssl.SSLError | ssl.CertificateError | requests.exceptions.SSLError):
            return True
        if isinstance(current, requests.exceptions.RequestException) and current.args:
            inner = current.args[0]
            if isinstance(inner, urllib3.exceptions.MaxRetryError) and isinstance(
                inner.reason, urllib3.exceptions.SSLError | ssl.SSLError
            ):
                return True
    return False


_TRANSPORT_ERRORS = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)
_TIMEOUT_ERRORS = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)


class LocalLeadsHook(BaseHook):
    """Talks to the LocalLeads Credits API through an Airflow connection of type ``localleads``.

    :param localleads_conn_id: the Airflow connection: host = base URL (default
        ``https://leadsapi.postorbit.io``), password = API key (or ``LOCALLEADS_API_KEY``), extras
        ``timeout``, ``max_retries``, ``allow_insecure_http``.
    :param timeout: seconds per request, overriding the connection's ``timeout`` extra.
    :param max_retries: retries of a failed request, overriding the ``max_retries`` extra.
    :param retry_policy: full control of the backoff (mainly for tests); ``max_retries`` still
        comes from the connection unless given here.
    """

    conn_name_attr = "localleads_conn_id"
    default_conn_name = "localleads_default"
    conn_type = "localleads"
    hook_name = "LocalLeads"

    def __init__(
        self,
        localleads_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.localleads_conn_id = localleads_conn_id
        self._timeout_override = timeout
        self._max_retries_override = max_retries
        self._retry_policy = retry_policy

    def __repr__(self) -> str:
        return f"{type(self).__name__}(localleads_conn_id={self.localleads_conn_id!r})"

    # ------------------------------------------------------------------ connection form

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The Airflow 2.11 connection form (3.2+ reads ``ui-field-behaviour`` from provider info)."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Typed extra fields for the Airflow 2.11 form (3.2+ reads ``conn-fields``)."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, IntegerField, StringField
        from wtforms.validators import NumberRange, Optional, Regexp

        return {
            # A StringField, not a DecimalField: Airflow 2.11 only accepts string, integer and boolean
            # extras (any other field type makes it drop the whole hook from the form and the CLI).
            # settings_from_connection parses the number and names the field if it is wrong.
            "timeout": StringField(
                lazy_gettext(CONN_FIELDS["timeout"]["label"]),
                validators=[Optional(), Regexp(_SECONDS_PATTERN, message="Enter a number of seconds, e.g. 30")],
                widget=BS3TextFieldWidget(),
                description=CONN_FIELDS["timeout"]["description"],
            ),
            "max_retries": IntegerField(
                lazy_gettext(CONN_FIELDS["max_retries"]["label"]),
                validators=[Optional(), NumberRange(min=0, max=10)],
                widget=BS3TextFieldWidget(),
                description=CONN_FIELDS["max_retries"]["description"],
            ),
            "allow_insecure_http": BooleanField(
                lazy_gettext(CONN_FIELDS["allow_insecure_http"]["label"]),
                default=False,
                description=CONN_FIELDS["allow_insecure_http"]["description"],
            ),
        }

    # ------------------------------------------------------------------ settings & session

    def _settings_for(self, conn: Any) -> ConnectionSettings:
        settings = settings_from_connection(
            conn, timeout=self._timeout_override, max_retries=self._max_retries_override
        )
        _REDACT_LOGS.register(settings.api_key)
        return settings

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The validated connection (looked up once, on first use)."""
        return self._settings_for(self.get_connection(self.localleads_conn_id))

    def _policy(self, settings: ConnectionSettings) -> RetryPolicy:
        # The retry count always comes from the settings (connection extra or hook argument).
        return replace(self._retry_policy or RetryPolicy(), max_retries=settings.max_retries)

    @cached_property
    def session(self) -> requests.Session:
        """One session per hook, so repeated calls reuse the same connection."""
        session = requests.Session()
        session.headers["User-Agent"] = USER_AGENT
        session.headers["Accept"] = "application/json"
        session.verify = checked_ca_bundle() or True  # the same CA bundle as the async path
        for prefix in ("http://", "https://"):
            session.mount(prefix, WatchedAdapter())
        return session

    def close(self) -> None:
        """Close the pooled connections (the hook stays usable: a new session opens on next use)."""
        session = self.__dict__.pop("session", None)
        if session is not None:
            session.close()

    def __enter__(self) -> LocalLeadsHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP (sync)

    def _attempt(
        self, settings: ConnectionSettings, path: str, params: dict[str, int] | None, budget: float, parse: _Parse[T]
    ) -> T:
        """One GET: send, read a capped body within the time budget, parse the answer.

        ``budget`` (what is left of the call's deadline, at most connect + read timeout) bounds the
        whole attempt by the wall clock, whatever the server does; see :class:`AttemptDeadline`.
        """
        budget = min(budget, settings.connect_timeout + settings.read_timeout)
        deadline = AttemptDeadline(budget)
        reading = False
        try:
            with (
                deadline,
                self.session.get(
                    settings.base_url + path,
                    params=params,
                    auth=_BearerAuth(settings.api_key),
                    timeout=(min(settings.connect_timeout, budget), min(settings.read_timeout, budget)),
                    allow_redirects=False,
                    stream=True,
                ) as response,
            ):
                reading = True
                body = self._read_body(response, path, deadline)
                status, headers = response.status_code, response.headers
        except LocalLeadsError:
            raise
        except _TRANSPORT_ERRORS as err:
            _strip_requests(err)
            raise self._transport_error(
                err, settings, path, budget, timed_out=deadline.expired, reading=reading, where="this worker"
            ) from err
        return parse(status, headers, body)

    @staticmethod
    def _read_body(response: requests.Response, path: str, deadline: AttemptDeadline) -> bytes:
        """Read the body, at most MAX_BODY_BYTES (announced or received), before ``deadline`` expires.

        Errors while reading (a body cut short, a reset, a stall) propagate as the transport's own
        exceptions; ``_attempt`` turns them into LocalLeadsConnectionError.
        """
        _refuse_announced_oversize(response.headers, path, response.status_code)
        raw = response.raw
        chunks: list[bytes] = []
        size = 0
        while True:
            # read1 returns what has arrived instead of waiting for a full chunk (and bounds what
            # one call may decompress), so the size cap applies as bytes arrive.
            # (requests opens the raw stream with decoding off; iter_content would turn it on, so do we.)
            if hasattr(raw, "read1"):
                chunk = raw.read1(_READ_CHUNK, decode_content=True)
            else:  # urllib3 < 2
                chunk = raw.read(_READ_CHUNK, decode_content=True)
            if deadline.expired:
                # The watchdog cut the connection: what looks like the end of the body may be that cut.
                raise TimeoutError("the attempt's deadline expired while the body was being read")
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            _refuse_oversize(size, path, response.status_code)
            chunks.append(chunk)

    @staticmethod
    def _transport_error(
        err: BaseException,
        settings: ConnectionSettings,
        path: str,
        budget: float,
        *,
        timed_out: bool,
        reading: bool,
        where: str,
    ) -> LocalLeadsError:
        """The LocalLeadsError for a failure below HTTP (shared by the sync and async paths)."""
        name = type(err).__name__
        if timed_out or isinstance(err, _TIMEOUT_ERRORS):
            if reading:
                return LocalLeadsConnectionError(
                    f"The LocalLeads API at {settings.base_url} sent its answer too slowly and the request ran "
                    f"out of time ({budget:.1f} s, {name}); it may be overloaded, or a proxy is stalling",
                    path=path,
                )
            return LocalLeadsConnectionError(
                f"The LocalLeads API at {settings.base_url} did not answer within {budget:.1f} s ({name}); "
                f"it may be overloaded or unreachable from {where}",
                path=path,
            )
        if not reading and _is_tls_failure(err):
            return LocalLeadsTLSError(
                f"TLS to {settings.base_url} failed ({name}); check the host name and the certificate, or the CA "
                "bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, SSL_CERT_FILE or SSL_CERT_DIR on workers and triggerer)",
                path=path,
            )
        if reading:
            return LocalLeadsConnectionError(
                f"The connection to the LocalLeads API at {settings.base_url} broke while the answer was being "
                f"read ({name}: the body was cut short or reset); this is usually temporary",
                path=path,
            )
        return LocalLeadsConnectionError(
            f"Could not reach the LocalLeads API at {settings.base_url}, or it hung up without answering "
            f"({name}); check the connection's host and that {where} can reach it (DNS, firewall, proxy)",
            path=path,
        )

    def _call(self, path: str, params: dict[str, int] | None, parse: _Parse[T]) -> T:
        settings = self.settings
        return call_with_retries(
            self._policy(settings),
            lambda budget: self._attempt(settings, path, params, budget, parse),
            log=self.log,
        )

    # ------------------------------------------------------------------ public API

    def get_balance(self) -> CreditBalance:
        """The organisation's current balance (``GET /api/v1/credits/balance``)."""
        settings = self.settings

        def parse(status: int, headers: Mapping[str, str], body: bytes) -> CreditBalance:
            return parse_balance(status, headers, body, path=BALANCE_PATH, redact=settings.redact)

        return self._call(BALANCE_PATH, None, parse)

    def list_transactions(self, limit: int = 50, offset: int = 0) -> TransactionPage:
        """One page of the credit history, newest first. ``limit`` is 1..100 (checked before sending).

        The page is the one asked for (``offset`` echoed in ``meta.offset``, at most ``limit``
        items, newest first, no id twice) or a LocalLeadsResponseError is raised.
        """
        params = {"limit": _validate_limit("limit", limit), "offset": _validate_offset(offset)}
        settings = self.settings

        def parse(status: int, headers: Mapping[str, str], body: bytes) -> TransactionPage:
            return parse_transaction_page(
                status, headers, body, path=TRANSACTIONS_PATH, redact=settings.redact, limit=limit, offset=offset
            )

        return self._call(TRANSACTIONS_PATH, params, parse)

    def iter_transactions(self, page_size: int = MAX_PAGE_SIZE) -> Iterator[CreditTransaction]:
        """Every transaction, newest first, each at most once, one page in memory at a time.

        The API pages by offset only, so a transaction added while we page pushes the rest down
        and a deleted one pulls it up. This listing keeps a cursor instead of trusting offsets:
        the ``createdAt`` of the last transaction yielded and the ids yielded at exactly that
        ``createdAt`` (ties). Each later page is read so that it starts with a transaction
        strictly newer than the cursor (the one before the last yielded, or before its ties),
        which proves nothing between the pages was skipped, whatever order the API gives equal
        timestamps; if the history moved and it does not, the listing searches for its place
        again (the change in ``meta.total`` as a first guess, then galloping and bisecting)
        before yielding more. Within a page only transactions past the cursor are yielded.

        What is promised, for a history that changes while it is listed:

        * no transaction is yielded twice, and the order is newest first (``createdAt`` never
          increases);
        * a transaction present from the first request to the last is yielded exactly once;
        * one deleted while listing is yielded at most once (it may be absent); one added while
          listing is yielded at most once, and never if it is newer than the last transaction
          yielded when it was added (new activity at the head is not part of this listing);
        * if the history changes so fast that the place cannot be found again within
          ``_MAX_RELOCATIONS`` reads, LocalLeadsResponseError says so: run the listing again.

        Requests: ``1 + ceil((n - page_size) / min(page_size, 98))`` for ``n`` transactions with
        distinct timestamps when nothing changes (later pages are read with ``page_size + 2``
        items, two of them already seen, up to the API's limit of 100; with ties, the read grows
        to hold them), plus a few per change (logarithmic in how far the history moved).
        Memory: one page, plus the ids sharing the cursor's ``createdAt`` (at most
        ``_MAX_TIE_IDS``; more ties than that is refused). Only if more than 98 transactions share
        one ``createdAt`` must the API keep their relative order stable between requests.
        """
        page_size = _validate_limit("page_size", page_size)
        first = self.list_transactions(limit=page_size, offset=0)
        yield from first.items
        if not first.items or _ends_history(first, 0, page_size):
            return
        cursor = _HistoryCursor(first)
        read_limit = cursor.read_limit(page_size)
        offset = cursor.next_offset(read_limit)
        search = _Relocation()
        while True:
            page = self.list_transactions(limit=read_limit, offset=offset)
            items = page.items
            if not items and offset == 0:
                return  # everything was deleted
            strict = cursor.strict(read_limit)
            if items and (offset == 0 or cursor.safe_start(items[0], strict)):
                # Nothing before this page is still to be yielded: take what is new in it.
                fresh = [t for t in items if not cursor.done(t)]
                last = _ends_history(page, offset, read_limit)
                if fresh:
                    yield from fresh
                    if last:
                        return
                    cursor.advance(page, offset, fresh)
                    read_limit = cursor.read_limit(page_size)
                    offset = cursor.next_offset(read_limit)
                    search = _Relocation()
                    continue
                if last:
                    return
                offset = search.next_offset(cursor, page, offset, read_limit, behind=True, strict=strict)
            else:
                # The page starts past the cursor (deletions before it, or we jumped too far).
                offset = search.next_offset(cursor, page, offset, read_limit, behind=False, strict=strict)
            if search.reads > _MAX_RELOCATIONS:
                raise LocalLeadsResponseError(
                    f"The transaction history changed too much while it was being listed: after {search.reads} "
                    "reads the listing could not find its place again without risking a skipped transaction. "
                    "Run the listing again (ideally when fewer transactions are being added or deleted)",
                    path=TRANSACTIONS_PATH,
                )

    def test_connection(self) -> tuple[bool, str]:
        """Read the balance (read-only) to prove the host and API key work; used by the UI's Test button."""
        try:
            balance = self.get_balance()
        except LocalLeadsError as err:
            return False, str(err)
        except Exception as err:  # noqa: BLE001 - the UI must get a message, not a traceback
            # e.g. AirflowNotFoundException for a missing connection; no API key was read yet.
            return False, f"{type(err).__name__}: {err}"
        return True, f"Connected to {self.settings.base_url}. Credits: {balance.summary()}"

    # ------------------------------------------------------------------ HTTP (async)

    async def aget_settings(self) -> ConnectionSettings:
        """The validated connection, looked up without blocking the event loop (triggerer-safe)."""
        cached = self.__dict__.get("settings")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        from airflow_provider_localleads._compat import aget_connection

        settings = self._settings_for(await aget_connection(self.localleads_conn_id))
        self.__dict__["settings"] = settings
        return settings

    @staticmethod
    def async_client() -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` set up for this API, for callers that poll repeatedly (the trigger).

        Redirects are not followed, and the API key is set per request, never on the client. Bodies
        are asked for uncompressed (``Accept-Encoding: identity``): httpx decompresses a whole
        network chunk at once, so a compressed answer could expand far beyond the body cap before
        the cap is checked; the balance is a few hundred bytes anyway. The CA bundle is the one the
        synchronous path trusts (:mod:`airflow_provider_localleads._tls`), loaded once per process.
        """
        import httpx

        return httpx.AsyncClient(
            headers={"User-Agent": USER_AGENT, "Accept": "application/json", "Accept-Encoding": "identity"},
            follow_redirects=False,
            verify=shared_ssl_context(),
        )

    async def aget_balance(self, client: httpx.AsyncClient | None = None) -> CreditBalance:
        """Asynchronous :meth:`get_balance` for triggers: httpx, asyncio sleeps, same retry policy.

        :param client: a client from :meth:`async_client` to reuse across calls; one is opened and
            closed per call when not given.
        """
        settings = await self.aget_settings()

        def parse(status: int, headers: Mapping[str, str], body: bytes) -> CreditBalance:
            return parse_balance(status, headers, body, path=BALANCE_PATH, redact=settings.redact)

        if client is not None:
            return await self._acall(client, settings, BALANCE_PATH, parse)
        async with self.async_client() as own:
            return await self._acall(own, settings, BALANCE_PATH, parse)

    async def _acall(self, client: httpx.AsyncClient, settings: ConnectionSettings, path: str, parse: _Parse[T]) -> T:
        return await acall_with_retries(
            self._policy(settings),
            lambda budget: self._aattempt(client, settings, path, budget, parse),
            log=self.log,
        )

    async def _aattempt(
        self, client: httpx.AsyncClient, settings: ConnectionSettings, path: str, budget: float, parse: _Parse[T]
    ) -> T:
        """One asynchronous GET, bounded by ``budget`` seconds of wall clock (``asyncio.timeout``)."""
        import asyncio

        import httpx

        budget = min(budget, settings.connect_timeout + settings.read_timeout)
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        reading = False
        try:
            async with asyncio.timeout(budget):
                request = client.build_request("GET", settings.base_url + path, timeout=timeout)
                request.headers["Authorization"] = f"Bearer {settings.api_key}"
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    reading = True
                    _refuse_announced_oversize(response.headers, path, response.status_code)
                    body = _BoundedBody(response.headers.get("Content-Encoding", ""), path, response.status_code)
                    async for raw in response.aiter_raw():
                        body.feed(raw)
                    body.finish()
                finally:
                    await response.aclose()
        except LocalLeadsError:
            raise
        except (TimeoutError, httpx.RequestError, OSError, zlib.error) as err:
            _strip_requests(err)
            timed_out = isinstance(err, TimeoutError | httpx.TimeoutException)
            raise self._transport_error(
                err, settings, path, budget, timed_out=timed_out, reading=reading, where="the triggerer"
            ) from err
        return parse(response.status_code, response.headers, body.value())


# ---------------------------------------------------------------------------------------------- helpers


def _refuse_announced_oversize(headers: Mapping[str, str], path: str, status: int) -> None:
    declared = (headers.get("Content-Length") or "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise LocalLeadsResponseError(
            f"The LocalLeads API announced a {int(declared)}-byte answer, more than the {MAX_BODY_BYTES} bytes "
            "this provider reads; check the connection's host",
            path=path,
            status_code=status,
        )


def _refuse_oversize(size: int, path: str, status: int) -> None:
    if size > MAX_BODY_BYTES:
        raise LocalLeadsResponseError(
            f"The LocalLeads API answer is larger than the {MAX_BODY_BYTES} bytes this provider reads; check the "
            "connection's host",
            path=path,
            status_code=status,
        )


class _BoundedBody:
    """Collects an asynchronous body from raw bytes, inflating gzip/deflate with a bounded output.

    httpx inflates each network chunk whole before the caller sees it, so 64 KB of gzip can become
    64 MB before any cap applies. The client asks for ``identity``; a server that compresses anyway
    is inflated here at most ``MAX_BODY_BYTES + 1`` bytes at a time. Other encodings are refused.
    """

    def __init__(self, encoding: str, path: str, status: int) -> None:
        self._path, self._status = path, status
        self._chunks: list[bytes] = []
        self._size = 0
        encoding = encoding.strip().lower()
        self._inflate: Any = None
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._inflate = zlib.decompressobj(wbits=47)  # zlib or gzip header, detected
        elif encoding not in ("", "identity"):
            raise LocalLeadsResponseError(
                f"The LocalLeads API answered with Content-Encoding {excerpt(encoding, str, 40)!r}, which this "
                "provider does not decode (it asks for identity); check the connection's host or proxy",
                path=path,
                status_code=status,
            )

    def _add(self, data: bytes) -> None:
        self._size += len(data)
        _refuse_oversize(self._size, self._path, self._status)
        self._chunks.append(data)

    def feed(self, raw: bytes) -> None:
        if self._inflate is None:
            self._add(raw)
            return
        pending = raw
        while pending:
            self._add(self._inflate.decompress(pending, MAX_BODY_BYTES + 1 - self._size))
            pending = self._inflate.unconsumed_tail

    def finish(self) -> None:
        if self._inflate is not None:
            self._add(self._inflate.flush())

    def value(self) -> bytes:
        return b"".join(self._chunks)


def _ends_history(page: TransactionPage, offset: int, limit: int) -> bool:
    """Whether ``page`` (read at ``offset`` with ``limit``) reaches the end of the history.

    A short page always does. ``meta.total`` only counts when it agrees exactly with the page: a
    total smaller than what the page shows is an inconsistent count and is not trusted.
    """
    return len(page.items) < min(limit, page.limit) or offset + len(page.items) == page.total


class _HistoryCursor:
    """How far :meth:`LocalLeadsHook.iter_transactions` has got, independent of offsets.

    Every transaction newer than ``created_at``, and those at exactly ``created_at`` whose ids are
    in ``tie_ids``, is behind the cursor ("done"): yielded, or newer than the listing. Also kept,
    as guesses for the next read: where the ties began (``group_start``), where the last page
    ended (``last``) and ``meta.total`` then (``total``).
    """

    def __init__(self, first: TransactionPage) -> None:
        self.created_at: datetime = first.items[-1].created_at
        self.tie_ids: set[str] = set()
        self.group_start = 0
        self.last = 0
        self.total = first.total
        self.advance(first, 0, first.items)

    def done(self, txn: CreditTransaction) -> bool:
        return txn.created_at > self.created_at or (txn.created_at == self.created_at and txn.id in self.tie_ids)

    def read_limit(self, page_size: int) -> int:
        """How many to read next: the transaction before the ties, the ties, and ``page_size`` new ones
        (at most the API's 100), so that a whole group of ties is seen in one read whenever it can be."""
        return min(MAX_PAGE_SIZE, page_size + 1 + len(self.tie_ids))

    def fits(self, read_limit: int) -> bool:
        """Whether the ties fit in one read together with one transaction before and one after them."""
        return len(self.tie_ids) <= read_limit - 2

    def strict(self, read_limit: int) -> bool:
        """Whether a page must start *strictly* before the cursor's ``createdAt`` to prove nothing was skipped.

        Always, unless the ties are too many for one read: an API may order equal timestamps
        differently on each request (SQL ``ORDER BY created_at`` with ``OFFSET`` does), so a page
        starting *at* a yielded transaction proves nothing about its unseen ties. Re-reading the
        whole group of ties from the transaction before it makes their order irrelevant.
        """
        return self.fits(read_limit)

    def safe_start(self, txn: CreditTransaction, strict: bool) -> bool:
        """Whether a page starting with ``txn`` proves that nothing before it is still to be yielded."""
        return txn.created_at > self.created_at or (not strict and txn.id in self.tie_ids)

    def next_offset(self, read_limit: int, total: int | None = None) -> int:
        """Where the next page should start: just before the ties at the cursor (or at the last
        transaction read, if they do not fit in a page). With ``total``, shifted by how much
        ``meta.total`` changed: right if only transactions newer than the cursor came or went."""
        aligned = self.group_start - 1 if self.fits(read_limit) else self.last
        shift = 0 if total is None else total - self.total
        return max(0, aligned + shift)

    def advance(self, page: TransactionPage, offset: int, fresh: Sequence[CreditTransaction]) -> None:
        """Move past ``fresh`` (the new transactions of ``page``, read at ``offset``, just yielded)."""
        boundary = fresh[-1].created_at
        if boundary != self.created_at:
            self.created_at = boundary
            self.tie_ids = set()
        self.tie_ids.update(t.id for t in fresh if t.created_at == boundary)
        if len(self.tie_ids) > _MAX_TIE_IDS:
            raise LocalLeadsResponseError(
                f"More than {_MAX_TIE_IDS} transactions share the timestamp {boundary.isoformat()}, too many to "
                "list exactly once by offset; list them with list_transactions instead",
                path=TRANSACTIONS_PATH,
            )
        self.group_start = offset + next(i for i, t in enumerate(page.items) if t.created_at == boundary)
        self.last = offset + len(page.items) - 1
        self.total = page.total


class _Relocation:
    """Finding the cursor's place again after the history moved, in few reads.

    ``behind``: the offset of a transaction seen to be behind the cursor with nothing new before
    it (the boundary is after it); ``ahead``: an offset whose transaction was not behind the cursor
    (the boundary is at or before it). The first guess comes from the change in ``meta.total``;
    then the search gallops (doubling steps) until both bounds are known, and bisects between them.
    The bounds are only guesses (the history may move again); every page is still checked.
    """

    def __init__(self) -> None:
        self.reads = 0
        self.behind: int | None = None
        self.ahead: int | None = None
        self.steps = 0
        self.guessed = False

    def next_offset(
        self,
        cursor: _HistoryCursor,
        page: TransactionPage,
        offset: int,
        read_limit: int,
        *,
        behind: bool,
        strict: bool,
    ) -> int:
        self.reads += 1
        items = page.items
        if behind:
            sentinel = len(items) - 1
            if strict:  # the next page must start strictly before the cursor: keep such a transaction
                while sentinel > 0 and items[sentinel].created_at <= cursor.created_at:
                    sentinel -= 1
                if sentinel == 0:
                    sentinel = len(items) - 1
            self.behind = offset + sentinel
            if self.ahead is not None and self.ahead <= self.behind:
                self.ahead = None
        else:
            self.ahead = offset if items else min(offset, page.total)
            if self.behind is not None and self.behind >= self.ahead:
                self.behind = None
        if not self.guessed and page.total != cursor.total:
            self.guessed = True
            guess = cursor.next_offset(read_limit, page.total)
            if (
                guess != offset
                and (self.behind is None or guess >= self.behind)
                and (self.ahead is None or guess < self.ahead)
            ):
                return guess
        if self.behind is not None and self.ahead is not None:
            if self.ahead - self.behind < read_limit:
                return self.behind
            return (self.behind + self.ahead) // 2
        self.steps += 1
        if self.ahead is None:
            assert self.behind is not None
            return self.behind + ((1 << (self.steps - 1)) - 1) * (read_limit - 1)
        return max(0, self.ahead - (1 << (self.steps - 1)))
