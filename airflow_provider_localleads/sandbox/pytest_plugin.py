"""pytest fixtures that run the LocalLeads sandbox for a test.

Installed with the provider, this plugin is picked up automatically (``pytest11`` entry point
``localleads_sandbox``). Without the entry point, enable it in your root ``conftest.py``::

    pytest_plugins = ["airflow_provider_localleads.sandbox.pytest_plugin"]

or on the command line with ``-p airflow_provider_localleads.sandbox.pytest_plugin``.

Testing your own DAG against the sandbox (``dags/`` beside ``tests/``; see ``localleads_airflow_home``)::

    def test_my_pipeline_skips_when_credits_are_short(
        localleads_airflow_home, localleads_sandbox, localleads_sandbox_connection
    ):
        from airflow.models import DagBag  # inside the test: the fixture configures Airflow first

        localleads_sandbox.set_balance(monthly=100, bonus=0, used=95)   # 5 credits left
        localleads_sandbox.rate_limit_next(retry_after="1")             # and one 429 on the way

        dag = DagBag().get_dag("my_pipeline")
        dag.test()                     # tasks use conn id "localleads_default" -> the sandbox

        assert localleads_sandbox.request_count("/api/v1/credits/balance") == 2   # the 429 + the retry

``localleads_sandbox_connection`` sets ``AIRFLOW_CONN_LOCALLEADS_DEFAULT`` for the duration of the test
(``monkeypatch``), so anything that resolves the default connection in this process, including
``dag.test()``, reaches the sandbox. For a task that runs in another process, hand it
``localleads_sandbox.url`` and drive the sandbox from there with ``SandboxClient(url)``.

Importing this module costs only the standard library and pytest: it is loaded into every pytest
session of an environment where the provider is installed, so it must never import Airflow (only
``localleads_airflow_home`` does, when a test asks for it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_localleads.sandbox.server import SandboxServer

__all__ = [
    "CONN_ENV_VAR",
    "DAGS_FOLDER_INI",
    "DEFAULT_CONN_ID",
    "ENTRY_POINT_NAME",
    "localleads_airflow_home",
    "localleads_sandbox",
    "localleads_sandbox_connection",
]

#: The ``pytest11`` entry-point name under which an installed provider registers this module.
ENTRY_POINT_NAME = "localleads_sandbox"
DEFAULT_CONN_ID = "localleads_default"
CONN_ENV_VAR = "AIRFLOW_CONN_" + DEFAULT_CONN_ID.upper()
#: The ini option (pytest.ini, pyproject's [tool.pytest.ini_options]) naming the DAGs folder for
#: ``localleads_airflow_home``, relative to the rootdir.
DAGS_FOLDER_INI = "localleads_dags_folder"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        DAGS_FOLDER_INI, "DAGs folder for the localleads_airflow_home fixture (default: dags)", default="dags"
    )


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


@pytest.fixture(scope="session")
def localleads_airflow_home(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Path]:
    """A throw-away Airflow home with a migrated SQLite database, so ``dag.test()`` works in a fresh
    environment (opt-in: ask for it in the tests that run DAGs). Returns the home's path.

    Airflow reads its configuration when it is first imported, so this fixture must run before
    anything imports Airflow: import ``DagBag`` and your DAGs inside the test, not at the top of the
    test module. The DAGs folder is ``dags/`` under the rootdir (the ini option
    ``localleads_dags_folder`` changes it; on Airflow 3 ``dag.test()`` runs only DAGs from it). Also set:
    no example DAGs, a Fernet key (connections are encrypted, as in a deployment). Once per session.
    """
    if "airflow" in sys.modules:
        raise pytest.UsageError(
            "localleads_airflow_home must configure Airflow before Airflow is imported, but something in this "
            "test session imported it already (a test module or conftest.py importing airflow or a DAG file at "
            "the top). Import DagBag and your DAGs inside the test function instead"
        )
    from cryptography.fernet import Fernet  # installed with Airflow

    home = tmp_path_factory.mktemp("airflow-home")
    settings = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(pytestconfig.rootpath / str(pytestconfig.getini(DAGS_FOLDER_INI))),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.items():
            patch.setenv(name, value)
        # Airflow 2.11's unit-test mode forces an executor that refuses SQLite.
        patch.delenv("AIRFLOW__CORE__UNIT_TEST_MODE", raising=False)
        from airflow.utils.db import initdb  # what `airflow db migrate` does on an empty database

        initdb()
        yield home
