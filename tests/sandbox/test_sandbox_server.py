"""``SandboxServer`` (``sandbox/server.py``): lifecycle, where it listens, and ``connection_json``."""

from __future__ import annotations

import http.client
import json
import re
import socket

import pytest
import requests
from sandbox_support import AUTH, get

from airflow_provider_localleads.sandbox import BALANCE_PATH, SandboxServer


@pytest.mark.parametrize("bad_key", ["", "has space", "tab\tkey", "caf\u00e9", "line\nbreak"])
def test_unusable_api_keys_are_refused(bad_key):
    with pytest.raises(ValueError, match="api_key"):
        SandboxServer(api_key=bad_key)


def test_lifecycle(http_session):
    sandbox = SandboxServer()
    with pytest.raises(RuntimeError, match="start"):
        _ = sandbox.url
    assert not sandbox.running
    sandbox.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            sandbox.start()
        url = sandbox.url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert get(http_session, sandbox, BALANCE_PATH).status_code == 200
    finally:
        sandbox.stop()
    sandbox.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        http_session.get(url + BALANCE_PATH, headers=AUTH, timeout=2)

    sandbox.start()  # a restart rebinds the same port: an outage and a recovery
    try:
        assert sandbox.url == url
        assert get(http_session, sandbox, BALANCE_PATH).status_code == 200
    finally:
        sandbox.stop()


def test_stop_cuts_idle_keep_alive_connections(localleads_sandbox):
    conn = http.client.HTTPConnection(localleads_sandbox.host, localleads_sandbox.port, timeout=5)
    conn.request("GET", BALANCE_PATH, headers=AUTH)
    conn.getresponse().read()
    localleads_sandbox.stop()

    def reuse() -> None:
        conn.request("GET", BALANCE_PATH, headers=AUTH)
        conn.getresponse().read()

    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        reuse()
    conn.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_non_loopback_hosts_need_allow_remote(host):
    with pytest.raises(ValueError, match="allow_remote"):
        SandboxServer(host=host)


def test_localhost_and_ipv6_loopback(http_session):
    with SandboxServer(host="localhost") as sandbox:
        assert get(http_session, sandbox, BALANCE_PATH).status_code == 200
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        sandbox6 = SandboxServer(host="::1").start()
    except OSError:
        pytest.skip("IPv6 loopback not available")
    try:
        assert sandbox6.url.startswith("http://[::1]:")
        assert get(http_session, sandbox6, BALANCE_PATH).status_code == 200
    finally:
        sandbox6.stop()


def test_port_in_use_raises_oserror(localleads_sandbox):
    with pytest.raises(OSError):
        SandboxServer(port=localleads_sandbox.port).start()


def test_connection_json(localleads_sandbox):
    conn = json.loads(localleads_sandbox.connection_json())
    assert conn == {"conn_type": "localleads", "host": localleads_sandbox.url, "password": "sandbox-key"}
    conn = json.loads(localleads_sandbox.connection_json("http", extra={"max_retries": 0}))
    assert conn["conn_type"] == "http"
    assert conn["extra"] == {"max_retries": 0}


def test_airflow_accepts_the_connection_json(localleads_sandbox):
    connection_module = pytest.importorskip("airflow.models.connection")
    conn = connection_module.Connection.from_json(localleads_sandbox.connection_json(), conn_id="localleads_default")
    assert conn.conn_type == "localleads"
    assert conn.host == localleads_sandbox.url
    assert conn.password == "sandbox-key"
