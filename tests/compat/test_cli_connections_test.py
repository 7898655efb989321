"""``airflow connections test localleads_default`` against the sandbox (Airflow 3.3 and 2.11).

The connection comes from ``AIRFLOW_CONN_LOCALLEADS_DEFAULT`` and its API key is a canary
(``sk_canary_<hex>``) that must never appear in anything the command prints. Airflow's CLI prints
only "Connection success!" on success (the hook's message is shown by the UI's Test button, checked
in-process below and through the REST API in the other modules) and the message on failure.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from compat_support import (
    AIRFLOW_BIN,
    AIRFLOW_VERSION,
    AirflowHome,
    canary_key,
    connection_json,
    one_line,
)
from packaging.version import Version

from airflow_provider_localleads.sandbox import SandboxServer

CONN_ID = "localleads_default"
CONN_ENV = "AIRFLOW_CONN_LOCALLEADS_DEFAULT"


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return one_line(self.stdout + "\n" + self.stderr)


@dataclass(frozen=True)
class Runs:
    sandbox: SandboxServer
    wrong_key: str
    good: CliRun
    bad: CliRun


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(host="127.0.0.1", port=0, api_key=canary_key()) as server:
        yield server


@pytest.fixture(scope="module")
def runs(cli_home: AirflowHome, sandbox: SandboxServer) -> Runs:
    """Both CLI runs (right key, wrong key), concurrently, once per module."""
    wrong_key = canary_key()
    envs = {
        "good": cli_home.env(
            AIRFLOW__CORE__TEST_CONNECTION="Enabled", **{CONN_ENV: connection_json(sandbox.url, sandbox.api_key)}
        ),
        "bad": cli_home.env(
            AIRFLOW__CORE__TEST_CONNECTION="Enabled", **{CONN_ENV: connection_json(sandbox.url, wrong_key)}
        ),
    }
    procs = {
        name: subprocess.Popen(
            [str(AIRFLOW_BIN), "connections", "test", CONN_ID],
            env=env,
            cwd=cli_home.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, env in envs.items()
    }
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=180)
        results[name] = CliRun(proc.returncode, stdout, stderr)
    return Runs(sandbox=sandbox, wrong_key=wrong_key, good=results["good"], bad=results["bad"])


def test_connection_test_succeeds_against_the_sandbox(runs: Runs) -> None:
    assert runs.good.returncode == 0, runs.good.text[-3000:]
    assert "Connection success!" in runs.good.stdout
    assert "Connection failed!" not in runs.good.stdout
    # One read-only balance request reached the sandbox with the right key.
    assert runs.sandbox.request_count("/api/v1/credits/balance") >= 1


def test_connection_test_with_a_wrong_key_fails_with_a_clear_message(runs: Runs) -> None:
    text = runs.bad.text
    assert "Connection failed!" in text
    assert "Connection success!" not in text
    assert "401" in text
    assert "API key" in text
    assert "password field" in text  # tells the user where to fix it
    if Version("3.3") <= AIRFLOW_VERSION:
        # Airflow 2.11 to 3.2's CLI exits 0 even when the test fails (Airflow's behaviour, not ours).
        assert runs.bad.returncode == 1


def test_the_api_key_is_never_printed(runs: Runs) -> None:
    for run, key in ((runs.good, runs.sandbox.api_key), (runs.bad, runs.wrong_key)):
        assert key not in run.stdout
        assert key not in run.stderr
        assert runs.sandbox.api_key not in run.stdout + run.stderr
    # Both runs really happened and read the connection that holds the key (Airflow 3.0 logs its
    # plugin set-up on stdout before that line).
    assert "Retrieving connection: 'localleads_default'" in runs.good.stdout.splitlines()
    assert "Retrieving connection: 'localleads_default'" in runs.bad.stdout.splitlines()


def test_the_test_message_reports_the_balance(canary_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the CLI and the UI's Test button compute: ``Connection.test_connection()`` -> (True, balance)."""
    monkeypatch.setenv(CONN_ENV, connection_json(canary_sandbox.url, canary_sandbox.api_key))
    from airflow.models.connection import Connection

    conn = Connection.get_connection_from_secrets(CONN_ID)
    status, message = conn.test_connection()
    assert status is True, message
    assert message.startswith(f"Connected to {canary_sandbox.url}. Credits: 82 available")
    assert canary_sandbox.api_key not in message
