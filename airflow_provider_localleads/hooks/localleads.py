"""LocalLeadsHook: the LocalLeads Credits API as typed Python calls, through an Airflow connection.

One short method per endpoint over :meth:`LocalLeadsHook._get` (and ``_aget``). Nothing is looked up or
sent until a method is called, so constructing the hook at DAG-parse time is free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_localleads._compat import connection_form_behaviour, connection_form_widgets
from airflow_provider_localleads.client.pagination import (
    MAX_PAGE_SIZE,
    TRANSACTIONS_PATH,
    iter_exactly_once,
    validate_limit,
)
from airflow_provider_localleads.client.responses import check_page, parse_answer
from airflow_provider_localleads.client.retry import RetryPolicy, acall_with_retries, call_with_retries
from airflow_provider_localleads.client.secrets import amask_env_key, mask_env_key
from airflow_provider_localleads.client.settings import ConnectionSettings, settings_from_connection
from airflow_provider_localleads.client.transport import (
    Params,
    asend,
    open_async_client,
    open_session,
    send,
)
from airflow_provider_localleads.client.values import python_whole_number
from airflow_provider_localleads.exceptions import LocalLeadsError
from airflow_provider_localleads.models import CreditBalance, CreditTransaction, CreditUsage, TransactionPage
from airflow_provider_localleads.planning.check import enforce_credits, enough_message, required_cost
from airflow_provider_localleads.planning.usage import summarize_usage, utc_moment, validate_days

if TYPE_CHECKING:
    import httpx
    import requests

    from airflow_provider_localleads.estimates import CostFromHistory

__all__ = ["BALANCE_PATH", "LocalLeadsHook"]

BALANCE_PATH = "/api/v1/credits/balance"

T = TypeVar("T")
_Build = Callable[[Mapping[str, Any]], T]


class LocalLeadsHook(BaseHook):
    """Talks to the LocalLeads Credits API through an Airflow connection of type ``localleads``.

    :param localleads_conn_id: the Airflow connection: host = base URL, password = API key, extras
        ``timeout``, ``max_retries``, ``allow_insecure_http`` (docs/connection.md).
    :param timeout: seconds per request, overriding the connection's ``timeout`` extra.
    :param max_retries: retries of a failed request, overriding the ``max_retries`` extra.
    :param retry_policy: full control of the backoff; ``max_retries`` still comes from the connection
        unless given here.
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

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The Airflow 2.11-3.1 connection form (3.2+ reads ``ui-field-behaviour`` from provider info)."""
        return connection_form_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Typed extra fields for the Airflow 2.11-3.1 form (3.2+ reads ``conn-fields``)."""
        return connection_form_widgets()

    def _settings_for(self, conn: Any, extra: Mapping[str, Any] | None = None) -> ConnectionSettings:
        return settings_from_connection(
            conn, extra=extra, timeout=self._timeout_override, max_retries=self._max_retries_override
        )

    @cached_property
    def settings(self) -> ConnectionSettings:
        conn = self.get_connection(self.localleads_conn_id)
        settings = self._settings_for(conn)
        mask_env_key(conn, settings.api_key)
        return settings

    async def aget_settings(self) -> ConnectionSettings:
        """:attr:`settings` without blocking the event loop: common.compat picks ``aget_connection`` where it
        masks secrets asynchronously (3.3.2+), the synchronous look-up in a thread elsewhere."""
        cached = self.__dict__.get("settings")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        conn = await get_async_connection(self.localleads_conn_id, self)
        try:
            extra: Mapping[str, Any] | None = await get_async_extra_dejson(conn)
        except Exception:  # noqa: BLE001 - an unreadable extra is named by settings_from_connection
            extra = None
        settings = self._settings_for(conn, extra)
        await amask_env_key(conn, settings.api_key)
        self.__dict__["settings"] = settings
        return settings

    def _policy(self, settings: ConnectionSettings) -> RetryPolicy:
        return replace(self._retry_policy or RetryPolicy(), max_retries=settings.max_retries)

    @cached_property
    def session(self) -> requests.Session:
        return open_session()

    @staticmethod
    def async_client() -> httpx.AsyncClient:
        return open_async_client()

    def close(self) -> None:
        """Close the pooled connections (a new session opens on next use)."""
        session = self.__dict__.pop("session", None)
        if session is not None:
            session.close()

    def __enter__(self) -> LocalLeadsHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _get(self, path: str, build: _Build[T], params: Params = None) -> T:
        """GET ``path`` with retries; ``build`` turns the successful answer's JSON object into the result."""
        settings = self.settings

        def attempt(budget: float) -> T:
            answer = send(self.session, settings, path, params, budget)
            return parse_answer(*answer, path=path, redact=settings.redact, build=build)

        return call_with_retries(self._policy(settings), attempt, log=self.log)

    async def _aget(self, client: httpx.AsyncClient | None, path: str, build: _Build[T], params: Params = None) -> T:
        settings = await self.aget_settings()
        if client is None:
            async with self.async_client() as own:
                return await self._aget(own, path, build, params)

        async def attempt(budget: float) -> T:
            answer = await asend(client, settings, path, params, budget)
            return parse_answer(*answer, path=path, redact=settings.redact, build=build)

        return await acall_with_retries(self._policy(settings), attempt, log=self.log)

    def get_balance(self) -> CreditBalance:
        return self._get(BALANCE_PATH, CreditBalance.from_response)

    async def aget_balance(self, client: httpx.AsyncClient | None = None) -> CreditBalance:
        """:meth:`get_balance` for triggers, over ``client`` (from :meth:`async_client`) or a client of its own."""
        return await self._aget(client, BALANCE_PATH, CreditBalance.from_response)

    def list_transactions(self, limit: int = 50, offset: int = 0) -> TransactionPage:
        """One page of the credit history, newest first; ``limit`` 1..100 and ``offset`` >= 0. A page that is not
        the one asked for (offset, size, order, an id twice) is a LocalLeadsResponseError."""
        limit = validate_limit("limit", limit)
        if (start := python_whole_number(offset)) is None or start < 0:
            raise ValueError(f"offset must be a whole number >= 0, got {offset!r}")
        params = {"limit": limit, "offset": start}
        redact = self.settings.redact

        def build(body: Mapping[str, Any]) -> TransactionPage:
            return check_page(TransactionPage.from_response(body), limit=limit, offset=offset, redact=redact)

        return self._get(TRANSACTIONS_PATH, build, params)

    def iter_transactions(self, page_size: int = MAX_PAGE_SIZE) -> Iterator[CreditTransaction]:
        """Every transaction, newest first, each exactly once even when new ones arrive while it pages
        (see ``client.pagination.iter_exactly_once``); ``page_size`` 1..100."""
        yield from iter_exactly_once(
            lambda limit, offset: self.list_transactions(limit=limit, offset=offset), page_size
        )

    def require_credits(self, cost: int | CostFromHistory, on_insufficient: str = "fail") -> CreditBalance:
        """CheckCreditsOperator's check inside any task, so the task that spends checks for itself.

        :param cost: credits about to be spent, a whole number >= 0, or a CostFromHistory.
        :param on_insufficient: ``"fail"`` (InsufficientCreditsError, no retry) or ``"skip"``.
        :return: the balance, which covers ``cost``.
        """
        credits = required_cost(self, cost, on_insufficient)
        balance = self.get_balance()
        enforce_credits(balance, credits, on_insufficient)
        self.log.info("%s", enough_message(credits, balance))  # the line every credit check logs
        return balance

    def get_usage(self, days: int = 30, *, now: datetime | None = None) -> CreditUsage:
        """What was spent in the last ``days`` days before ``now`` (aware; default: now), and when the
        available credits run out at that rate."""
        days, moment = validate_days(days), utc_moment(now)
        return summarize_usage(self.get_balance(), self.iter_transactions(), days, moment)

    def test_connection(self) -> tuple[bool, str]:
        """Read the balance to prove the host and API key work (the UI's Test button)."""
        try:
            balance = self.get_balance()
        except LocalLeadsError as err:
            return False, str(err)
        except Exception as err:  # noqa: BLE001 - the UI must get a message, not a traceback
            # e.g. AirflowNotFoundException for a missing connection; no API key was read yet.
            return False, f"{type(err).__name__}: {err}"
        return True, f"Connected to {self.settings.base_url}. Credits: {balance.summary()}"
