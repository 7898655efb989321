"""Fixtures for the LocalLeadsHook integration tests: real servers on loopback, connections via env vars."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from integration_support import FAST, Behaviour, ConnSetter, HookFactory, RawServer

from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.sandbox import SandboxServer, SandboxState

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NETRC")


@pytest.fixture(autouse=True)
def _hermetic_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must not go through a developer's proxy, nor pick up their netrc."""
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("LOCALLEADS_API_KEY", raising=False)


@pytest.fixture
def set_conn(monkeypatch: pytest.MonkeyPatch) -> ConnSetter:
    """``set_conn(conn_id, host=..., password=..., extra=...)``: define an Airflow connection via env var."""

    def setter(conn_id: str, host: str | None = None, password: str | None = None, **extra: Any) -> str:
        conn: dict[str, Any] = {"conn_type": "localleads"}
        if host is not None:
            conn["host"] = host
        if password is not None:
            conn["password"] = password
        if extra:
            conn["extra"] = extra
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return setter


@pytest.fixture
def make_hook() -> Iterator[HookFactory]:
    """``make_hook(conn_id, **hook_kwargs)`` with the fast retry policy; every hook is closed afterwards."""
    hooks: list[LocalLeadsHook] = []

    def factory(conn_id: str, **kwargs: Any) -> LocalLeadsHook:
        kwargs.setdefault("retry_policy", FAST)
        hook = LocalLeadsHook(conn_id, **kwargs)
        hooks.append(hook)
        return hook

    yield factory
    for hook in hooks:
        hook.close()


@pytest.fixture
def sandbox_hook(localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory) -> LocalLeadsHook:
    """A hook on conn id ``ll_sandbox`` pointing at ``localleads_sandbox`` (default retries: 2)."""
    set_conn("ll_sandbox", host=localleads_sandbox.url, password=localleads_sandbox.api_key)
    return make_hook("ll_sandbox")


@pytest.fixture
def seeded_sandbox() -> Iterator[Callable[[int], SandboxServer]]:
    """``seeded_sandbox(n)``: a running sandbox with exactly ``n`` synthetic transactions (one a minute)."""
    servers: list[SandboxServer] = []

    def factory(count: int) -> SandboxServer:
        server = SandboxServer(state=SandboxState(seed_transactions=count)).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Behaviour], RawServer]]:
    """``raw_server(behaviour)``: a started RawServer, stopped (threads joined) after the test."""
    servers: list[RawServer] = []

    def factory(behaviour: Behaviour) -> RawServer:
        server = RawServer(behaviour)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()
