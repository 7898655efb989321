"""Fixtures for the LocalLeadsHook integration tests: real servers on loopback, connections via env vars."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from loopback_support import ConnSetter, HookFactory, clear_network_env

# Shared fixtures (set_conn, make_hook, raw_server): pytest finds fixtures imported into a conftest.
from loopback_support import make_hook_fixture as make_hook_fixture
from loopback_support import raw_server_fixture as raw_server_fixture
from loopback_support import set_conn_fixture as set_conn_fixture

from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.sandbox import SandboxServer, SandboxState


@pytest.fixture(autouse=True)
def _hermetic_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_network_env(monkeypatch)


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
