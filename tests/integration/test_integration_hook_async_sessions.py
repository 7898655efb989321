"""LocalLeadsHook's async balance read (the trigger's path) and its one-session-per-hook connection reuse."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import urllib3.util.connection
from loopback_support import (
    BALANCE_BODY,
    BALANCE_PATH,
    ConnSetter,
    HookFactory,
    RawFactory,
    RawServer,
    answer_every_request,
    closed_port,
    response_bytes,
)

from airflow_provider_localleads import __version__
from airflow_provider_localleads.exceptions import (
    LocalLeadsAuthenticationError,
    LocalLeadsConnectionError,
    LocalLeadsRateLimitError,
    LocalLeadsResponseError,
    LocalLeadsServerError,
)
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.models import CreditBalance
from airflow_provider_localleads.sandbox import SandboxServer


def _never_answers(conn: socket.socket, server: RawServer) -> None:
    server.read_request(conn)
    server.wait_forever()


# ---------------------------------------------------------------------------------------------- async


def test_aget_balance_matches_sandbox(localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook) -> None:
    localleads_sandbox.spend(7)
    balance = asyncio.run(sandbox_hook.aget_balance())
    assert balance == CreditBalance.from_api(localleads_sandbox.balance())
    assert balance.available_credits == 75
    assert balance == sandbox_hook.get_balance()
    assert [r.auth_valid for r in localleads_sandbox.requests] == [True, True]


def test_aget_balance_wrong_key_is_authentication_error_not_retried(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    set_conn("ll_async_401", host=localleads_sandbox.url, password="not-the-key")
    with pytest.raises(LocalLeadsAuthenticationError) as info:
        asyncio.run(make_hook("ll_async_401").aget_balance())
    assert info.value.http_status == 401
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1


def test_aget_balance_retries_503(localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook) -> None:
    localleads_sandbox.fail_next(503)
    assert asyncio.run(sandbox_hook.aget_balance()).available_credits == 82
    assert [r.status for r in localleads_sandbox.requests] == [503, 200]


def test_aget_balance_gives_up_after_max_retries(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    set_conn("ll_async_5xx", host=localleads_sandbox.url, password=localleads_sandbox.api_key, max_retries=1)
    localleads_sandbox.fail_next(500, times=None)
    with pytest.raises(LocalLeadsServerError):
        asyncio.run(make_hook("ll_async_5xx").aget_balance())
    assert localleads_sandbox.request_count(BALANCE_PATH) == 2


def test_aget_balance_honours_retry_after(localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook) -> None:
    localleads_sandbox.rate_limit_next(retry_after="1")
    started = time.monotonic()
    assert asyncio.run(sandbox_hook.aget_balance()).available_credits == 82
    assert time.monotonic() - started >= 0.95  # a lower bound: only the Retry-After explains it; load only adds time
    assert [r.status for r in localleads_sandbox.requests] == [429, 200]


def test_aget_balance_retry_after_beyond_cap_fails_at_once(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    localleads_sandbox.rate_limit_next(retry_after="3600", times=None)
    with pytest.raises(LocalLeadsRateLimitError) as info:
        asyncio.run(sandbox_hook.aget_balance())
    assert info.value.retry_after == 3600
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1


def test_aget_balance_never_answering_server_is_bounded(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    server = raw_server(_never_answers)
    set_conn("ll_async_silent", host=server.url, password="k-silent", max_retries=0)
    started = time.monotonic()
    with pytest.raises(LocalLeadsConnectionError):
        asyncio.run(make_hook("ll_async_silent", timeout=0.5).aget_balance())
    # The README promises connect + read timeout (1 s here); 5x for a loaded CI machine.
    assert time.monotonic() - started < 5
    assert server.accepted == 1


def test_aget_balance_never_answering_server_is_retried(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    server = raw_server(_never_answers)
    set_conn("ll_async_silent2", host=server.url, password="k-silent", max_retries=1)
    started = time.monotonic()
    with pytest.raises(LocalLeadsConnectionError):
        asyncio.run(make_hook("ll_async_silent2", timeout=0.5).aget_balance())
    # The README promises connect + read timeout per attempt (2 x 1 s here); 5x for a loaded CI machine.
    assert time.monotonic() - started < 10
    assert len(server.requests) == 2


def test_aget_balance_connection_refused(set_conn: ConnSetter, make_hook: HookFactory) -> None:
    set_conn("ll_async_refused", host=f"http://127.0.0.1:{closed_port()}", password="k", max_retries=0)
    with pytest.raises(LocalLeadsConnectionError, match="Could not reach"):
        asyncio.run(make_hook("ll_async_refused").aget_balance())


def test_aget_balance_short_body_is_a_retried_connection_error(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    def short_once(conn: socket.socket, server: RawServer) -> None:
        with server.lock:
            first = server.accepted == 1
        if first:
            server.read_request(conn)
            conn.sendall(response_bytes(body=BALANCE_BODY[:30], content_length=len(BALANCE_BODY)))
            return
        answer_every_request(response_bytes())(conn, server)

    server = raw_server(short_once)
    set_conn("ll_async_short", host=server.url, password="k-short", max_retries=1)
    assert asyncio.run(make_hook("ll_async_short").aget_balance()).available_credits == 82
    assert server.accepted == 2


@pytest.mark.parametrize("kind", ["html", "missing_field", "array"])
def test_aget_balance_malformed_bodies(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook, kind: str
) -> None:
    localleads_sandbox.malformed_next(kind)
    with pytest.raises(LocalLeadsResponseError):
        asyncio.run(sandbox_hook.aget_balance())
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1


def test_aget_balance_looks_the_connection_up_without_blocking(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a running event loop the synchronous look-up is off limits: common.compat's
    get_async_connection is used, once (on Airflow before 3.3.2 it runs the synchronous look-up in a
    worker thread, which is allowed)."""
    from airflow_provider_localleads.hooks import localleads as hook_module

    real_lookup = LocalLeadsHook.get_connection

    def lookup_off_the_loop(cls: type[LocalLeadsHook], conn_id: str) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return real_lookup(conn_id)
        raise AssertionError("synchronous get_connection called on the event loop")

    monkeypatch.setattr(LocalLeadsHook, "get_connection", classmethod(lookup_off_the_loop))
    calls: list[str] = []
    real = hook_module.get_async_connection  # common.compat's, imported at the top of the hook module

    async def spy(conn_id: str, hook: Any = None) -> Any:
        calls.append(conn_id)
        return await real(conn_id, hook)

    monkeypatch.setattr(hook_module, "get_async_connection", spy)

    async def main() -> tuple[CreditBalance, CreditBalance]:
        first = await sandbox_hook.aget_balance()
        second = await sandbox_hook.aget_balance()
        return first, second

    first, second = asyncio.run(main())
    assert first.available_credits == second.available_credits == 82
    assert calls == ["ll_sandbox"]  # looked up once, then cached on the hook


def test_aget_balance_reuses_a_given_client(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    server = raw_server(answer_every_request(response_bytes()))
    set_conn("ll_async_client", host=server.url, password="k-client")
    hook = make_hook("ll_async_client")

    async def main() -> None:
        async with hook.async_client() as client:
            for _ in range(3):
                await hook.aget_balance(client)

    asyncio.run(main())
    assert len(server.requests) == 3
    assert server.accepted == 1
    assert all(r.headers["authorization"] == "Bearer k-client" for r in server.requests)


# -------------------------------------------------------------------------------------------- sessions


def test_one_session_reuses_one_tcp_connection(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    server = raw_server(answer_every_request(response_bytes()))
    set_conn("ll_reuse", host=server.url, password="k-reuse")
    hook = make_hook("ll_reuse")

    hook.get_balance()
    hook.get_balance()
    assert hook.test_connection()[0]

    assert len(server.requests) == 3
    assert server.accepted == 1
    headers = server.requests[0].headers
    assert headers["user-agent"] == f"airflow-provider-localleads/{__version__}"
    assert headers["accept"] == "application/json"
    assert headers["authorization"] == "Bearer k-reuse"


def test_close_closes_the_connection_and_the_hook_stays_usable(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    server = raw_server(answer_every_request(response_bytes()))
    set_conn("ll_close", host=server.url, password="k-close")
    hook = make_hook("ll_close")
    hook.get_balance()
    assert not server.peer_closed.is_set()

    hook.close()
    assert server.peer_closed.wait(2), "the server never saw the client close its connection"

    hook.get_balance()  # a fresh session opens on next use
    assert server.accepted == 2


def test_context_manager_closes_the_session(raw_server: RawFactory, set_conn: ConnSetter) -> None:
    server = raw_server(answer_every_request(response_bytes()))
    set_conn("ll_with", host=server.url, password="k-with")
    with LocalLeadsHook("ll_with") as hook:
        hook.get_balance()
        hook.get_balance()
    assert server.accepted == 1
    assert server.peer_closed.wait(2)


def test_retries_against_the_sandbox_stay_on_one_connection(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox answers 503 with keep-alive, so a retry needs no new TCP connection."""
    opened: list[object] = []
    real_create = urllib3.util.connection.create_connection

    def counting_create(*args: Any, **kwargs: Any) -> socket.socket:
        opened.append(args[0])
        return real_create(*args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counting_create)
    localleads_sandbox.fail_next(503, times=2)
    sandbox_hook.get_balance()
    sandbox_hook.list_transactions(limit=5)
    assert localleads_sandbox.request_count() == 4
    assert len(opened) == 1
