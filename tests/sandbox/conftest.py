"""Fixtures for the sandbox's own tests (``localleads_sandbox`` itself comes from the pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from sandbox_support import NOW

from airflow_provider_localleads.sandbox import SandboxServer, SandboxState


@pytest.fixture
def http_session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # never send loopback traffic through a developer's proxy
        yield session


@pytest.fixture
def fixed_sandbox() -> Iterator[SandboxServer]:
    """A sandbox whose clock is frozen at NOW, for exact dates."""
    with SandboxServer(state=SandboxState(clock=lambda: NOW)) as server:
        yield server
