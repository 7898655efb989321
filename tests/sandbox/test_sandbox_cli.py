"""``python -m airflow_provider_localleads.sandbox`` (``sandbox/__main__.py``), run as a real process."""

from __future__ import annotations

import json
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sandbox_support import AUTH, subprocess_env

from airflow_provider_localleads.sandbox import BALANCE_PATH, TRANSACTIONS_PATH, SandboxClient


def _read_line(proc: subprocess.Popen[str], timeout: float = 20) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            proc.kill()
            pytest.fail("the sandbox CLI printed nothing")
    return proc.stdout.readline()


@pytest.fixture
def run_cli() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_localleads.sandbox", *args],
            env=subprocess_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_cli_prints_the_real_url_serves_and_stops_on_sigterm(run_cli, http_session):
    proc = run_cli("--port", "0", "--monthly", "500", "--bonus", "0", "--used", "100", "--transactions", "120")
    line = _read_line(proc)
    match = re.search(r"(http://127\.0\.0\.1:(\d+))", line)
    assert match, line
    url = match.group(1)
    assert int(match.group(2)) != 0
    conn = json.loads(line.split("AIRFLOW_CONN_LOCALLEADS_DEFAULT=", 1)[1].strip().strip("'"))
    assert conn == {"conn_type": "localleads", "host": url, "password": "sandbox-key"}

    balance = http_session.get(url + BALANCE_PATH, headers=AUTH, timeout=5).json()["data"]
    assert (balance["availableCredits"], balance["resetDay"]) == (400, 1)
    meta = http_session.get(url + TRANSACTIONS_PATH, headers=AUTH, timeout=5).json()["meta"]
    assert meta["total"] == 120
    SandboxClient(url).spend(10)
    assert http_session.get(url + BALANCE_PATH, headers=AUTH, timeout=5).json()["data"]["availableCredits"] == 390

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    # The CLI checks for a signal every 0.5 s: 5 s is 10x that, for a loaded machine.
    assert time.monotonic() - started < 5
    assert "Traceback" not in err
    with pytest.raises(requests.ConnectionError):
        http_session.get(url + BALANCE_PATH, headers=AUTH, timeout=2)


def test_cli_ctrl_c_exits_cleanly(run_cli):
    proc = run_cli("--port", "0")
    _read_line(proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err


def test_cli_reads_the_key_from_the_environment(run_cli, http_session):
    proc = run_cli("--port", "0", "--reset-day", "15", LOCALLEADS_SANDBOX_API_KEY="env-key-1")
    line = _read_line(proc)
    url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
    assert '"password": "env-key-1"' in line
    ok = http_session.get(url + BALANCE_PATH, headers={"Authorization": "Bearer env-key-1"}, timeout=5)
    assert ok.json()["data"]["resetDay"] == 15
    assert http_session.get(url + BALANCE_PATH, headers=AUTH, timeout=5).status_code == 401

    proc2 = run_cli("--port", "0", "--api-key", "flag-key", LOCALLEADS_SANDBOX_API_KEY="env-key-1")
    assert '"password": "flag-key"' in _read_line(proc2)  # the flag wins over the environment


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "--allow-remote"),
        (["--port", "-1"], "--port"),
        (["--monthly", "ten"], "--monthly"),
        (["--reset-day", "32"], "--reset-day"),
    ],
)
def test_cli_refuses_bad_arguments(run_cli, args, message):
    proc = run_cli(*args)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert message in err
    assert out == ""


def test_cli_reports_a_busy_port(run_cli, localleads_sandbox):
    proc = run_cli("--port", str(localleads_sandbox.port))
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "cannot listen" in err
    assert "Traceback" not in err


def _command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow_provider_localleads.sandbox", *args],
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_commands_drive_a_running_sandbox(localleads_sandbox):
    url = localleads_sandbox.url
    topped = _command("top-up", "100", "--url", url)
    assert topped.returncode == 0, topped.stderr
    assert json.loads(topped.stdout)["type"] == "TOP_UP"
    assert _command("set-balance", "--used", "95", "--url", url).returncode == 0
    spent = _command("spend", "12", "Lead search: Dentists in Austin, TX", "--url", url)
    assert json.loads(spent.stdout)["description"] == "Lead search: Dentists in Austin, TX"
    assert localleads_sandbox.balance()["availableCredits"] == 100 + 125 - 95 - 12
    assert _command("fail-next", "--status", "503", "--url", url).returncode == 0
    assert localleads_sandbox.pending_faults()[0]["status"] == 503
    reset = _command("reset-month", LOCALLEADS_SANDBOX_URL=url)  # the URL from the environment
    assert json.loads(reset.stdout)["type"] == "MONTHLY_RESET"
    state = json.loads(_command("state", "--url", url).stdout)
    assert state["balance"]["usedCredits"] == 0
    assert state["faults"][0]["status"] == 503


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["spend", "99999"], 1, "cannot spend 99999 credits"),
        (["spend", "abc"], 2, "invalid int value: 'abc'"),
        (["set-balance", "--used", "-1"], 1, "used must be >= 0"),
        (["nothing"], 2, "unknown command 'nothing'; the commands are serve (the default), state, balance"),
    ],
)
def test_a_refused_command_says_why_without_a_traceback(localleads_sandbox, args, code, message):
    done = _command(*args, "--url", localleads_sandbox.url)
    assert (done.returncode, done.stdout) == (code, "")
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_command_without_a_sandbox_names_the_url():
    done = _command("state", "--url", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert "could not reach the LocalLeads sandbox at http://127.0.0.1:9" in done.stderr


def test_every_command_is_a_client_control_and_its_help_comes_from_it():
    from airflow_provider_localleads.sandbox.__main__ import COMMANDS, command_parser

    assert {"top-up", "set-balance", "spend", "reset-month", "fail-next", "state"} <= set(COMMANDS)
    for command, (method, positional) in COMMANDS.items():
        assert callable(getattr(SandboxClient, method)), command
        usage = command_parser(command).format_usage()
        assert all(name in usage for name in positional), (command, usage)
    assert "--used" in command_parser("set-balance").format_help()


def test_the_banner_says_how_to_drive_it(run_cli):
    proc = run_cli("--port", "0")
    url = re.search(r"http://127\.0\.0\.1:\d+", _read_line(proc)).group(0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert f"spend 12 --url {url}" in err
    assert f"GET {url}/_sandbox/ lists the controls" in err
