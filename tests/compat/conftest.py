"""Fixtures for the UI/CLI compatibility tests: a migrated Airflow home for CLI subprocesses, canary sandboxes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from compat_support import AirflowHome, canary_key, make_airflow_home

from airflow_provider_localleads.sandbox import SandboxServer


@pytest.fixture(scope="session")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """A private AIRFLOW_HOME with a migrated database (``airflow db migrate`` once per session)."""
    return make_airflow_home(tmp_path_factory.mktemp("compat-airflow-home"))


@pytest.fixture
def canary_sandbox() -> Iterator[SandboxServer]:
    """A sandbox whose API key is a fresh canary (``sk_canary_<hex>``) that must never be printed."""
    with SandboxServer(host="127.0.0.1", port=0, api_key=canary_key()) as server:
        yield server
