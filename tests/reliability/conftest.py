"""Fixtures for the reliability tests: hermetic network environment, connections, loopback servers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from reliability_support import (
    FAST,
    Behaviour,
    ConnSetter,
    HookFactory,
    RawFactory,
    RawServer,
    assert_no_armed_deadline,
)

from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

_NETWORK_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "NETRC",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "LOCALLEADS_API_KEY",
)


@pytest.fixture(autouse=True)
def _hermetic_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must not go through a developer's proxy, CA bundle or netrc."""
    for name in _NETWORK_VARS:
        monkeypatch.delenv(name, raising=False)


#: Threads the reliability tests start; none may outlive its test. (The hook's one watchdog thread
#: lives as long as the process; what must not outlive a test is an armed deadline.)
_OURS = ("rel-raw", "localleads-sandbox", "localleads-test-")


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        stray = [t for t in threading.enumerate() if t not in before and t.is_alive() and t.name.startswith(_OURS)]
        if not stray or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert stray == [], f"threads left running after the test: {[t.name for t in stray]}"
    assert_no_armed_deadline()


@pytest.fixture
def set_conn(monkeypatch: pytest.MonkeyPatch) -> ConnSetter:
    """``set_conn(conn_id, host=..., password=..., **extra)``: an Airflow connection via env var."""

    def setter(conn_id: str, host: str, password: str, **extra: Any) -> str:
        conn: dict[str, Any] = {"conn_type": "localleads", "host": host, "password": password}
        if extra:
            conn["extra"] = extra
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return setter


@pytest.fixture
def raw_server() -> Iterator[RawFactory]:
    """``raw_server(behaviour, tls=None)``: a RawServer stopped (threads joined) after the test."""
    servers: list[RawServer] = []

    def factory(behaviour: Behaviour, **kwargs: Any) -> RawServer:
        server = RawServer(behaviour, **kwargs)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def make_hook() -> Iterator[HookFactory]:
    """``make_hook(conn_id, **kwargs)``: a hook with the fast retry policy unless given; closed afterwards."""
    hooks: list[LocalLeadsHook] = []

    def factory(conn_id: str, **kwargs: Any) -> LocalLeadsHook:
        kwargs.setdefault("retry_policy", FAST)
        hook = LocalLeadsHook(conn_id, **kwargs)
        hooks.append(hook)
        return hook

    yield factory
    for hook in hooks:
        hook.close()
