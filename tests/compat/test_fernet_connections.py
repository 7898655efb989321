"""A connection with a password is read with a Fernet key set, as in every deployment (every line).

tests/conftest.py sets a fresh ``AIRFLOW__CORE__FERNET_KEY`` per session; the Airflow subprocesses
here inherit it. The password (the sandbox's API key, a canary) is read from an ``AIRFLOW_CONN_*``
variable and from the metadata database, where ``airflow connections add`` stores it encrypted.
``airflow connections test`` succeeds only when the hook sent the right key (the sandbox answers 401
otherwise). With cryptography 51 on Airflow 2.11, 3.0 and 3.1 every one of these look-ups failed
("The conn_id ... isn't defined": their ``get_fernet()`` sets an attribute on cryptography's Rust
``MultiFernet``); ``cryptography<51`` on those lines (dev.py) is what keeps this test green.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from compat_support import AIRFLOW_BIN, AirflowHome, canary_key, connection_json, one_line, run_airflow
from cryptography.fernet import Fernet

from airflow_provider_localleads.sandbox import SandboxServer

DB_CONN = "localleads_fernet_db"
ENV_CONN = "localleads_fernet_env"


@dataclass(frozen=True)
class CliResult:
    returncode: int
    output: str


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(host="127.0.0.1", port=0, api_key=canary_key()) as server:
        yield server


def _start_test(home: AirflowHome, conn_id: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(AIRFLOW_BIN), "connections", "test", conn_id],
        env=home.env(AIRFLOW__CORE__TEST_CONNECTION="Enabled", **env),
        cwd=home.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> CliResult:
    output, _ = proc.communicate(timeout=180)
    return CliResult(proc.returncode, one_line(output))


@pytest.fixture(scope="module")
def runs(cli_home: AirflowHome, sandbox: SandboxServer) -> dict[str, CliResult]:
    """``airflow connections test`` of a connection from the environment; meanwhile ``airflow connections
    add`` of one with the same password, then ``airflow connections test`` of that one."""
    from_env = _start_test(
        cli_home, ENV_CONN, **{f"AIRFLOW_CONN_{ENV_CONN.upper()}": connection_json(sandbox.url, sandbox.api_key)}
    )
    added = run_airflow(
        cli_home,
        *("connections", "add", DB_CONN, "--conn-type", "localleads"),
        *("--conn-host", sandbox.url, "--conn-password", sandbox.api_key),
    )
    runs = {"add": CliResult(added.returncode, one_line(added.stdout + added.stderr))}
    if added.returncode == 0:
        runs[DB_CONN] = _finish(_start_test(cli_home, DB_CONN))
    runs[ENV_CONN] = _finish(from_env)
    return runs


def test_the_session_has_a_fernet_key() -> None:
    Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"].encode())  # a valid key, not a placeholder


def test_the_stored_password_is_encrypted_with_the_key(
    runs: dict[str, CliResult], cli_home: AirflowHome, sandbox: SandboxServer
) -> None:
    assert runs["add"].returncode == 0, runs["add"].output[-3000:]
    with sqlite3.connect(cli_home.path / "airflow.db") as db:
        (password, is_encrypted) = db.execute(
            "SELECT password, is_encrypted FROM connection WHERE conn_id = ?", (DB_CONN,)
        ).fetchone()
    assert is_encrypted
    assert sandbox.api_key not in password
    assert Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"].encode()).decrypt(password.encode()).decode() == (
        sandbox.api_key
    )


@pytest.mark.parametrize("conn_id", [DB_CONN, ENV_CONN], ids=["metadata-database", "environment"])
def test_connections_test_reads_the_password(runs: dict[str, CliResult], sandbox: SandboxServer, conn_id: str) -> None:
    assert conn_id in runs, f"airflow connections add failed: {runs['add'].output[-3000:]}"
    result = runs[conn_id]
    assert "Connection success!" in result.output, result.output[-3000:]
    assert result.returncode == 0
    assert sandbox.api_key not in result.output


def test_the_password_is_read_in_process_with_the_key(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same look-up in this interpreter (Airflow imported with the session's key)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{ENV_CONN.upper()}", connection_json(sandbox.url, sandbox.api_key))
    from airflow.models.connection import Connection

    conn = Connection.get_connection_from_secrets(ENV_CONN)
    assert conn.password == sandbox.api_key
    status, message = conn.test_connection()
    assert status is True, message
