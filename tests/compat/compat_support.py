"""Shared helpers for the UI/CLI compatibility tests (Airflow 3.3 and 2.11).

Importable from the test modules as ``compat_support`` (pytest puts ``tests/compat`` on ``sys.path``
because the folder has no ``__init__.py``). Nothing here imports Airflow at import time.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".test-artifacts"

AIRFLOW_VERSION = Version(version("apache-airflow"))
AIRFLOW_V3 = AIRFLOW_VERSION.major >= 3
#: 2.11, 3.0 and 3.1 build a provider's connection-form fields from the hook's wtforms widgets
#: (``get_connection_form_widgets``: wtforms field types, no bounds); 3.2+ from provider info's
#: ``conn-fields`` (JSON-schema types with bounds).
FORM_FROM_WIDGETS = Version(AIRFLOW_VERSION.base_version) < Version("3.2")
PROVIDER_DIST = "airflow-provider-localleads"
PROVIDER_VERSION = version(PROVIDER_DIST)
CONN_TYPE = "localleads"
HOOK_CLASS = "airflow_provider_localleads.hooks.localleads.LocalLeadsHook"
EXTRA_FIELDS = ("timeout", "max_retries", "allow_insecure_http")
PRODUCTION_BASE_URL = "https://leadsapi.postorbit.io"

#: The ``airflow`` console script of the interpreter running the tests (not ``sys.executable``
#: resolved: a venv's python is a symlink and its scripts live next to the link).
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")

#: The extra Airflow 3.3's connection form saves when the optional fields are left empty (or typed
#: into and cleared again), exactly as it posts it: recorded from the real UI, re-checked by
#: test_connection_form_browser.py.
FORM_EXTRA_V3 = '{\n  "timeout": null,\n  "max_retries": null,\n  "allow_insecure_http": false\n}'

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"

_DROPPED_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "NETRC",
    "LOCALLEADS_API_KEY",
    "AIRFLOW__CORE__UNIT_TEST_MODE",
)
#: Configuration kept although other AIRFLOW__* settings are not: what dev.py sets for the lines that
#: need it (3.0.6's api-server signs no token without a JWT issuer), and the session's Fernet key
#: (tests/conftest.py), as a deployment has one.
_KEPT_CONFIG = ("AIRFLOW__API_AUTH__JWT_ISSUER", "AIRFLOW__CORE__FERNET_KEY")


def canary_key() -> str:
    """An API key that must never show up in any output."""
    return f"sk_canary_{secrets.token_hex(12)}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connection_json(host: str, password: str, extra: dict[str, Any] | None = None) -> str:
    """The value of an ``AIRFLOW_CONN_*`` variable (JSON form, understood by 2.11 and 3.x)."""
    conn: dict[str, Any] = {"conn_type": CONN_TYPE, "host": host, "password": password}
    if extra is not None:
        conn["extra"] = extra
    return json.dumps(conn)


@dataclass(frozen=True)
class AirflowHome:
    """A private AIRFLOW_HOME with a migrated SQLite database, for ``airflow ...`` subprocesses."""

    path: Path

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _DROPPED_ENV
            and not k.startswith("AIRFLOW_CONN_")
            and (not k.startswith("AIRFLOW__") or k in _KEPT_CONFIG)
        }
        env.update(
            AIRFLOW_HOME=str(self.path),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.path}/airflow.db",
            AIRFLOW__CORE__DAGS_FOLDER=str(self.path / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            # Rich (``airflow connections test``) wraps at the terminal width; keep messages on one line.
            COLUMNS="400",
        )
        env.update(overrides)
        return env


def run_airflow(home: AirflowHome, *args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AIRFLOW_BIN), *args],
        env=home.env(**env),
        cwd=home.path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def make_airflow_home(path: Path) -> AirflowHome:
    """Create the home and run ``airflow db migrate`` in it once."""
    (path / "dags").mkdir(parents=True, exist_ok=True)
    home = AirflowHome(path)
    result = run_airflow(home, "db", "migrate", timeout=300)
    assert result.returncode == 0, f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return home


def parse_json_output(stdout: str) -> Any:
    """The JSON document printed by ``airflow ... -o json`` (with ``-v`` 3.x logs to stdout around it)."""
    lines = stdout.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(("[", "{")):
            try:
                return json.loads("\n".join(lines[index:]))
            except json.JSONDecodeError:
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
    raise AssertionError(f"no JSON document in output:\n{stdout[-2000:]}")


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def provider_complaints(output: str) -> list[str]:
    """Log lines about our provider at WARNING or worse (or tracebacks naming it); the JSON result is skipped."""
    return [
        line
        for line in output.splitlines()
        if not line.startswith(("[{", "[]", "{"))
        and re.search(r"localleads", line, re.IGNORECASE)
        and re.search(r"warn|error|exception|traceback|unsupported|invalid|fail", line, re.IGNORECASE)
    ]
