"""LocalLeadsHook: authenticated, retried, typed access to the LocalLeads Credits API.

One ``requests.Session`` per hook keeps the TCP/TLS connection open across calls. Every request
has a finite connect and read timeout and a wall-clock budget (a server that drips one byte a
second still ends), a cap on the body size, and goes through one retry policy
(:mod:`airflow_provider_localleads._retry`). Answers are parsed into frozen dataclasses
(:mod:`airflow_provider_localleads.models`) or raise a typed
:class:`~airflow_provider_localleads.exceptions.LocalLeadsError`.

The API key is only ever placed in the ``Authorization`` header, by an auth object that also
prevents ``~/.netrc`` from replacing it; redirects are never followed, so the header cannot be
sent to another origin. Nothing is looked up or sent until a method is called: constructing the
hook at DAG-parse time is free.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import requests
from airflow.providers.common.compat.sdk import BaseHook
from requests.auth import AuthBase

from airflow_provider_localleads import CONN_FIELDS, UI_FIELD_BEHAVIOUR, __version__
from airflow_provider_localleads._responses import MAX_BODY_BYTES, interpret_response
from airflow_provider_localleads._retry import RetryPolicy, acall_with_retries, call_with_retries
from airflow_provider_localleads._settings import ConnectionSettings, settings_from_connection
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
# How many extra reads iter_transactions may spend re-finding its place after the history moved.
_MAX_RELOCATIONS_PER_PAGE = 8


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
        from wtforms import BooleanField, DecimalField, IntegerField
        from wtforms.validators import NumberRange, Optional

        return {
            "timeout": DecimalField(
                lazy_gettext(CONN_FIELDS["timeout"]["label"]),
                validators=[Optional(), NumberRange(min=0.001)],
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
        return settings_from_connection(conn, timeout=self._timeout_override, max_retries=self._max_retries_override)

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

    def _attempt(self, settings: ConnectionSettings, path: str, params: dict[str, int] | None, budget: float) -> Any:
        """One GET: send, read a capped body within the time budget, interpret the answer."""
        budget = min(budget, settings.connect_timeout + settings.read_timeout)
        started = time.monotonic()
        try:
            with self.session.get(
                settings.base_url + path,
                params=params,
                auth=_BearerAuth(settings.api_key),
                timeout=(min(settings.connect_timeout, budget), min(settings.read_timeout, budget)),
                allow_redirects=False,
                stream=True,
            ) as response:
                body = self._read_body(response, path, started + budget)
                return interpret_response(
                    response.status_code, response.headers, body, path=path, redact=settings.redact
                )
        except LocalLeadsError:
            raise
        except requests.exceptions.SSLError as err:
            raise LocalLeadsTLSError(
                f"TLS to {settings.base_url} failed ({type(err).__name__}); check the host name and the "
                "certificate (or the REQUESTS_CA_BUNDLE of the workers)",
                path=path,
            ) from err
        except requests.exceptions.Timeout as err:
            raise LocalLeadsConnectionError(
                f"The LocalLeads API at {settings.base_url} did not answer within {budget:.1f} s "
                f"({type(err).__name__}); it may be overloaded or unreachable from this worker",
                path=path,
            ) from err
        except requests.exceptions.ConnectionError as err:
            raise LocalLeadsConnectionError(
                f"Could not reach the LocalLeads API at {settings.base_url} ({type(err).__name__}); check "
                "the connection's host and that this worker can reach it (DNS, firewall, proxy)",
                path=path,
            ) from err
        except requests.exceptions.RequestException as err:
            raise LocalLeadsConnectionError(
                f"The connection to {settings.base_url} broke while reading the answer ({type(err).__name__})",
                path=path,
            ) from err

    @staticmethod
    def _read_body(response: requests.Response, path: str, deadline: float) -> bytes:
        """Read the body, at most MAX_BODY_BYTES, giving up at ``deadline`` (monotonic)."""
        declared = response.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise LocalLeadsResponseError(
                f"The LocalLeads API announced a {int(declared)}-byte answer, more than the "
                f"{MAX_BODY_BYTES} bytes this provider reads; check the connection's host",
                path=path,
                status_code=response.status_code,
            )
        raw = response.raw
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise LocalLeadsConnectionError(
                    "The LocalLeads API sent its answer too slowly and the request ran out of time",
                    path=path,
                    status_code=response.status_code,
                )
            # read1 returns what has arrived instead of waiting for a full chunk, so the deadline
            # is checked even against a server that drips one byte at a time.
            chunk = raw.read1(65536, decode_content=True) if hasattr(raw, "read1") else raw.read(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise LocalLeadsResponseError(
                    f"The LocalLeads API answer is larger than the {MAX_BODY_BYTES} bytes this provider reads; "
                    "check the connection's host",
                    path=path,
                    status_code=response.status_code,
                )
            chunks.append(chunk)

    def _get(self, path: str, params: dict[str, int] | None = None) -> dict[str, Any]:
        settings = self.settings
        return call_with_retries(  # type: ignore[no-any-return]
            self._policy(settings),
            lambda budget: self._attempt(settings, path, params, budget),
            log=self.log,
        )

    # ------------------------------------------------------------------ public API

    def get_balance(self) -> CreditBalance:
        """The organisation's current balance (``GET /api/v1/credits/balance``)."""
        body = self._get(BALANCE_PATH)
        return CreditBalance.from_api(body.get("data"), path=BALANCE_PATH)

    def list_transactions(self, limit: int = 50, offset: int = 0) -> TransactionPage:
        """One page of the credit history, newest first. ``limit`` is 1..100 (checked before sending)."""
        params = {"limit": _validate_limit("limit", limit), "offset": _validate_offset(offset)}
        body = self._get(TRANSACTIONS_PATH, params)
        return TransactionPage.from_api(body.get("data"), body.get("meta"), path=TRANSACTIONS_PATH)

    def iter_transactions(self, page_size: int = MAX_PAGE_SIZE) -> Iterator[CreditTransaction]:
        """Every transaction, newest first, each exactly once, one page in memory at a time.

        The API pages by offset only, so a transaction added while we page pushes everything down
        one place, and a deleted one pulls everything up. Each page after the first is read from
        one place *before* where we expect to continue, so that it starts with the last
        transaction we yielded (the anchor): finding the anchor further down means new
        transactions arrived (skip past it); not finding it means the history moved, and we step
        back or forward until the page straddles it, so nothing is skipped and nothing repeated.
        Transactions newer than the first page are not part of this listing.
        """
        page_size = _validate_limit("page_size", page_size)
        page = self.list_transactions(limit=page_size, offset=0)
        yield from page.items
        if not page.items:
            return
        anchor = page.items[-1]
        position = page.offset + len(page.items) - 1  # where we believe the anchor is
        total = page.total
        while position + 1 < total:
            found, start = self._page_after(anchor, position, page_size)
            if found is None:
                return
            fresh = found.items[start:]
            position = found.offset + len(found.items) - 1
            total = found.total
            if not fresh:
                return
            yield from fresh
            anchor = fresh[-1]

    def _page_after(
        self, anchor: CreditTransaction, position: int, page_size: int
    ) -> tuple[TransactionPage | None, int]:
        """Find a page that contains what comes right after ``anchor``; return it and that index."""
        offset = position
        for _ in range(_MAX_RELOCATIONS_PER_PAGE):
            page = self.list_transactions(limit=page_size, offset=offset)
            if not page.items:
                if offset == 0 or page.total == 0:
                    return None, 0
                # The list shrank under us: step back to find the anchor again.
                offset = max(0, min(offset - page_size + 1, page.total - 1))
                continue
            ids = [t.id for t in page.items]
            if anchor.id in ids:
                return page, ids.index(anchor.id) + 1
            newer = [t.created_at > anchor.created_at for t in page.items]
            older = [t.created_at < anchor.created_at for t in page.items]
            if older[0] and offset > 0:
                # Everything here is older than the anchor: transactions before it were deleted
                # and we would skip some; step back.
                offset = max(0, offset - page_size + 1)
                continue
            if not any(older) and page.offset + len(page.items) < page.total:
                # Everything here is at least as new as the anchor: more were inserted than a page
                # holds; step forward, keeping one item of overlap.
                offset = page.offset + len(page.items) - 1
                continue
            if any(older):
                first_older = older.index(True)
                if any(t.created_at == anchor.created_at and not n for t, n in zip(page.items, newer, strict=True)):
                    break  # ties at the anchor's timestamp and the anchor itself gone: ambiguous
                return page, first_older
            return None, 0
        raise LocalLeadsResponseError(
            "The transaction history changed too much while it was being paged (transactions were "
            "deleted around the last one read), so some could have been missed; run the listing again",
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

        Redirects are not followed, and the API key is set per request, never on the client.
        """
        import httpx

        return httpx.AsyncClient(headers={"User-Agent": USER_AGENT, "Accept": "application/json"})

    async def aget_balance(self, client: httpx.AsyncClient | None = None) -> CreditBalance:
        """Asynchronous :meth:`get_balance` for triggers: httpx, asyncio sleeps, same retry policy.

        :param client: a client from :meth:`async_client` to reuse across calls; one is opened and
            closed per call when not given.
        """
        settings = await self.aget_settings()
        if client is not None:
            body = await self._aget(client, settings, BALANCE_PATH)
        else:
            async with self.async_client() as own:
                body = await self._aget(own, settings, BALANCE_PATH)
        return CreditBalance.from_api(body.get("data"), path=BALANCE_PATH)

    async def _aget(self, client: httpx.AsyncClient, settings: ConnectionSettings, path: str) -> dict[str, Any]:
        return await acall_with_retries(  # type: ignore[no-any-return]
            self._policy(settings),
            lambda budget: self._aattempt(client, settings, path, budget),
            log=self.log,
        )

    async def _aattempt(self, client: httpx.AsyncClient, settings: ConnectionSettings, path: str, budget: float) -> Any:
        import asyncio
        import ssl

        import httpx

        budget = min(budget, settings.connect_timeout + settings.read_timeout)
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        try:
            async with asyncio.timeout(budget):
                request = client.build_request("GET", settings.base_url + path, timeout=timeout)
                request.headers["Authorization"] = f"Bearer {settings.api_key}"
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_BODY_BYTES:
                            raise LocalLeadsResponseError(
                                f"The LocalLeads API answer is larger than the {MAX_BODY_BYTES} bytes this "
                                "provider reads; check the connection's host",
                                path=path,
                                status_code=response.status_code,
                            )
                        chunks.append(chunk)
                finally:
                    await response.aclose()
            return interpret_response(
                response.status_code, response.headers, b"".join(chunks), path=path, redact=settings.redact
            )
        except LocalLeadsError:
            raise
        except (TimeoutError, httpx.TimeoutException) as err:
            raise LocalLeadsConnectionError(
                f"The LocalLeads API at {settings.base_url} did not answer within {budget:.1f} s "
                f"({type(err).__name__}); it may be overloaded or unreachable from the triggerer",
                path=path,
            ) from err
        except httpx.TransportError as err:
            if isinstance(err.__cause__ or err.__context__, ssl.SSLError):
                raise LocalLeadsTLSError(
                    f"TLS to {settings.base_url} failed; check the host name and the certificate",
                    path=path,
                ) from err
            raise LocalLeadsConnectionError(
                f"Could not reach the LocalLeads API at {settings.base_url} ({type(err).__name__}); check "
                "the connection's host and that the triggerer can reach it (DNS, firewall, proxy)",
                path=path,
            ) from err
