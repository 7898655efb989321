"""Keeping the API key in one request header and nowhere else; logs are Airflow's masker's to clean."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests
from airflow.providers.common.compat.sdk import mask_secret
from requests.auth import AuthBase


class BearerAuth(AuthBase):
    """An auth object, so that ``~/.netrc`` cannot replace the header."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._api_key}"
        return request

    def __repr__(self) -> str:
        return "<BearerAuth ***>"


def mask_env_key(conn: Any, api_key: str) -> None:
    """Airflow masks a connection's password when it looks the connection up, not a key read from
    ``LOCALLEADS_API_KEY``."""
    if api_key != conn.password:
        mask_secret(api_key)


async def amask_env_key(conn: Any, api_key: str) -> None:
    """:func:`mask_env_key` for the event loop, run the way common.compat looks connections up.

    ``mask_secret`` tells the task's or triggerer's supervisor synchronously. On the loop's own thread
    that raises on Airflow 3.0 and 3.1, and a plain ``asyncio.to_thread`` thread would drive the loop's
    stream from a second loop; asgiref's ``sync_to_async`` thread hands the call back to the loop.
    """
    if api_key != conn.password:
        from asgiref.sync import sync_to_async  # only the triggerer's path needs it

        await sync_to_async(mask_secret)(api_key)


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
    """Drop the request/response objects (their headers hold the key) that requests and httpx hang on
    their exceptions: the exception stays our error's cause, but must not carry the key into error
    trackers or pickles. Only called on a failure, which has imported httpx already.
    """
    import httpx

    for current in exception_chain(err):
        if isinstance(current, requests.exceptions.RequestException):
            current.request = None
            current.response = None
        elif isinstance(current, httpx.RequestError):
            current.request = None  # type: ignore[assignment]  # the public setter; the getter then raises
