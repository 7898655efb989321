"""pytest fixtures that run the LocalLeads sandbox for a test.

Installed with the provider, this plugin is picked up automatically (``pytest11`` entry point
``localleads_sandbox``). Without the entry point, enable it in your root ``conftest.py``::

    pytest_plugins = ["airflow_provider_localleads.sandbox.pytest_plugin"]

or on the command line with ``-p airflow_provider_localleads.sandbox.pytest_plugin``.

Testing your own DAG against the sandbox::

    def test_my_pipeline_skips_when_credits_are_short(localleads_sandbox, localleads_sandbox_connection):
        localleads_sandbox.set_balance(monthly=100, bonus=0, used=95)   # 5 credits left
        localleads_sandbox.rate_limit_next(retry_after="1")             # and one 429 on the way

        dag = DagBag("dags/").get_dag("my_pipeline")
        dag.test()                     # tasks use conn id "localleads_default" -> the sandbox

        assert localleads_sandbox.request_count("/api/v1/credits/balance") == 2   # the 429 + the retry

``localleads_sandbox_connection`` sets ``AIRFLOW_CONN_LOCALLEADS_DEFAULT`` for the duration of the test
(``monkeypatch``), so anything that resolves the default connection in this process, including
``dag.test()``, reaches the sandbox. For a task that runs in another process, hand it
``localleads_sandbox.url`` and drive the sandbox from there with ``SandboxClient(url)``.

Importing this module costs only the standard library and pytest: it is loaded into every pytest
session of an environment where the provider is installed, so it must never import Airflow.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_localleads.sandbox.server import SandboxServer

__all__ = [
    "CONN_ENV_VAR",
    "DEFAULT_CONN_ID",
    "ENTRY_POINT_NAME",
    "localleads_sandbox",
    "localleads_sandbox_connection",
]

#: The ``pytest11`` entry-point name under which an installed provider registers this module.
ENTRY_POINT_NAME = "localleads_sandbox"
DEFAULT_CONN_ID = "localleads_default"
CONN_ENV_VAR = "AIRFLOW_CONN_" + DEFAULT_CONN_ID.upper()


def pytest_plugin_registered(plugin: object, plugin_name: str, manager: Any) -> None:
    """Make a second way of loading this plugin a no-op instead of a crash.

    With the provider installed, the entry point registers this module as ``localleads_sandbox``; a
    project that also names it in ``-p airflow_provider_localleads.sandbox.pytest_plugin`` or in
    ``pytest_plugins`` would make pytest register the same module under a second name, which pluggy
    refuses ("Plugin already registered under a different name") and the whole session fails to start.
    Once registered under one name, the other name is blocked, and pytest skips blocked names quietly.
    """
    if plugin is not sys.modules[__name__]:
        return
    for other in (ENTRY_POINT_NAME, __name__):
        if other != plugin_name and manager.get_plugin(other) is None:
            manager.set_blocked(other)


@pytest.fixture
def localleads_sandbox() -> Iterator[SandboxServer]:
    """A running :class:`SandboxServer` on ``127.0.0.1`` (free port), fresh for each test.

    The default organisation has 100 monthly + 25 bonus - 43 used = 82 available credits and a short
    history; change it with ``set_balance``/``spend``/``top_up``/``reset_month``, queue faults with
    ``fail_next``/``rate_limit_next``/``slow_next``/``malformed_next``, and assert on traffic with
    ``request_count(path)`` and ``requests``. Stopped (and its port released) after the test.
    """
    with SandboxServer(host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
def localleads_sandbox_connection(localleads_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the ``localleads_default`` Airflow connection at ``localleads_sandbox``; returns the conn id.

    Done with ``AIRFLOW_CONN_LOCALLEADS_DEFAULT`` (restored after the test), which Airflow reads before
    its metadata database, so no database row is needed and nothing leaks into the next test.
    """
    monkeypatch.setenv(CONN_ENV_VAR, localleads_sandbox.connection_json())
    return DEFAULT_CONN_ID
