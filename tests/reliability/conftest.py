"""Fixtures for the reliability tests: hermetic network environment, connections, loopback servers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from loopback_support import THREAD_PREFIX

# Shared fixtures (set_conn, make_hook, raw_server): pytest finds fixtures imported into a conftest.
from loopback_support import make_hook_fixture as make_hook_fixture
from loopback_support import raw_server_fixture as raw_server_fixture
from loopback_support import set_conn_fixture as set_conn_fixture

from airflow_provider_localleads.client.tls import CA_BUNDLE_VARIABLES

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
    *CA_BUNDLE_VARIABLES,
    "LOCALLEADS_API_KEY",
)


@pytest.fixture(autouse=True)
def _hermetic_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must not go through a developer's proxy, CA bundle or netrc."""
    for name in _NETWORK_VARS:
        monkeypatch.delenv(name, raising=False)


#: Threads the reliability tests start; none may outlive its test (the provider itself starts none).
_OURS = (THREAD_PREFIX, "localleads-sandbox", "localleads-test-")


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
