"""Constants and helpers shared by the sandbox's tests (the fixtures are in this folder's conftest.py)."""

from __future__ import annotations

import json
import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from airflow_provider_localleads.sandbox import TRANSACTIONS_PATH, SandboxServer

ROOT = Path(__file__).resolve().parents[2]
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
NOW = datetime(2026, 5, 20, 12, 30, 15, 123456, tzinfo=UTC)
KEY = "sandbox-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMIT_ERROR = "limit must be an integer between 1 and 100"
OFFSET_ERROR = "offset must be an integer >= 0"


def get(
    session: requests.Session, sandbox: SandboxServer, path: str, *, auth: bool = True, **params: Any
) -> requests.Response:
    return session.get(sandbox.url + path, headers=AUTH if auth else {}, params=params or None, timeout=10)


def page(session: requests.Session, sandbox: SandboxServer, **params: Any) -> dict[str, Any]:
    response = get(session, sandbox, TRANSACTIONS_PATH, **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def raw_exchange(sandbox: SandboxServer, data: bytes) -> bytes:
    with socket.create_connection((sandbox.host, sandbox.port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def admin(session: requests.Session, sandbox: SandboxServer, method: str, route: str, body: Any = None):
    kwargs: dict[str, Any] = {"timeout": 5}
    if body is not None:
        kwargs["data"] = body if isinstance(body, bytes) else json.dumps(body)
    return session.request(method, f"{sandbox.url}/_sandbox/{route}", **kwargs)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env
