"""LocalLeadsHook configuration from the Airflow connection, and keeping the API key secret.

The secret tests run every path (success, 401, retried 5xx, timeout, refused, bad JSON, HTML, a server
echoing the key back) with a random canary key and look for it in everything a person or a log
collector could see: log records of every logger, stdout/stderr (Airflow's structlog output),
``str``/``repr`` of every exception and its full traceback with causes, and the hook's reprs. Logs
are Airflow's to mask: the HTTP libraries' own records are judged through Airflow's masker.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow.providers.common.compat.sdk import redact
from loopback_support import (
    BALANCE_PATH,
    ConnSetter,
    HookFactory,
    RawFactory,
    RawServer,
    answer_every_request,
    closed_port,
    response_bytes,
)

from airflow_provider_localleads.exceptions import (
    LocalLeadsAuthenticationError,
    LocalLeadsConfigurationError,
    LocalLeadsConnectionError,
    LocalLeadsError,
    LocalLeadsResponseError,
    LocalLeadsServerError,
)
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.models import CreditBalance
from airflow_provider_localleads.sandbox import SandboxServer

# ------------------------------------------------------------------------------------------ configuration


def test_missing_api_key_is_a_configuration_error_before_any_request(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    set_conn("ll_no_key", host=localleads_sandbox.url)
    hook = make_hook("ll_no_key")
    with pytest.raises(LocalLeadsConfigurationError, match="LOCALLEADS_API_KEY") as info:
        hook.get_balance()
    assert "ll_no_key" in str(info.value)
    assert "password" in str(info.value)
    ok, message = make_hook("ll_no_key").test_connection()
    assert ok is False
    assert "LOCALLEADS_API_KEY" in message
    assert localleads_sandbox.request_count() == 0


def test_api_key_from_the_environment(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn("ll_env_key", host=localleads_sandbox.url)
    monkeypatch.setenv("LOCALLEADS_API_KEY", localleads_sandbox.api_key)
    assert make_hook("ll_env_key").get_balance().available_credits == 82
    assert [r.auth_valid for r in localleads_sandbox.requests] == [True]


def test_connection_password_wins_over_the_environment(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn("ll_both_keys", host=localleads_sandbox.url, password=localleads_sandbox.api_key)
    monkeypatch.setenv("LOCALLEADS_API_KEY", "some-other-key")
    assert make_hook("ll_both_keys").get_balance().available_credits == 82


def read_balance(hook: LocalLeadsHook, mode: str) -> CreditBalance:
    return hook.get_balance() if mode == "sync" else asyncio.run(hook.aget_balance())


@pytest.mark.parametrize(
    ("bad_key", "position", "codepoint"),
    [
        ("\u201cllk_live_Q7wz9\u201d", 1, "U+201C (LEFT DOUBLE QUOTATION MARK)"),  # pasted curly quotes
        ("llk_live_\u0430bc123", 10, "U+0430 (CYRILLIC SMALL LETTER A)"),  # a look-alike letter
        ("llk_live_abc\u00e9123", 13, "U+00E9 (LATIN SMALL LETTER E WITH ACUTE)"),  # latin-1: requests sends it
        ("llk_live abc123", 9, "U+0020 (SPACE)"),
        ("llk_live_abc\x7f123", 13, "U+007F (a control character)"),
    ],
)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_api_key_that_cannot_be_sent_in_a_header_is_a_configuration_error_before_any_request(
    localleads_sandbox: SandboxServer,
    set_conn: ConnSetter,
    make_hook: HookFactory,
    bad_key: str,
    position: int,
    codepoint: str,
    mode: str,
) -> None:
    set_conn("ll_bad_chars", host=localleads_sandbox.url, password=bad_key)
    hook = make_hook("ll_bad_chars")
    with pytest.raises(LocalLeadsConfigurationError) as info:
        read_balance(hook, mode)
    error = info.value
    message = str(error)
    assert f"character {position} of {len(bad_key)} is {codepoint}" in message
    assert "connection's password field" in message
    assert "copy the key again" in message
    for text in (message, repr(error), repr(error.args), "".join(traceback.format_exception(error))):
        assert bad_key not in text
        assert bad_key.strip("\u201c\u201d") not in text
    assert localleads_sandbox.request_count() == 0


def test_api_key_from_the_environment_with_a_bad_character_names_the_variable(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn("ll_env_bad", host=localleads_sandbox.url)
    monkeypatch.setenv("LOCALLEADS_API_KEY", "llk_live_\u2019abc")
    with pytest.raises(LocalLeadsConfigurationError, match="LOCALLEADS_API_KEY environment variable") as info:
        make_hook("ll_env_bad").get_balance()
    assert "llk_live_" not in str(info.value)
    assert localleads_sandbox.request_count() == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_uri_connection_without_schema_to_a_plain_http_server_says_how_to_use_http(
    localleads_sandbox: SandboxServer, make_hook: HookFactory, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """``localleads://:KEY@127.0.0.1:PORT`` means https; the sandbox speaks http: the TLS error says so."""
    port = localleads_sandbox.port
    monkeypatch.setenv("AIRFLOW_CONN_LL_URI", f"localleads://:{localleads_sandbox.api_key}@127.0.0.1:{port}")
    hook = make_hook("ll_uri")
    with pytest.raises(LocalLeadsConnectionError) as info:
        read_balance(hook, mode)
    message = str(info.value)
    assert message.startswith(f"TLS to https://127.0.0.1:{port} failed")
    assert "answers plain http, not https" in message
    assert "set the connection's schema to http (URI form: localleads://:<API key>@host:port/http)" in message
    assert "http:// in its host" in message
    assert localleads_sandbox.api_key not in message

    # Following the advice works, in both paths.
    monkeypatch.setenv("AIRFLOW_CONN_LL_URI", f"localleads://:{localleads_sandbox.api_key}@127.0.0.1:{port}/http")
    fixed = make_hook("ll_uri")
    assert read_balance(fixed, mode).available_credits == 82


def test_uri_connection_extras_come_from_the_query_string(
    localleads_sandbox: SandboxServer, make_hook: HookFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"localleads://:{localleads_sandbox.api_key}@127.0.0.1:{localleads_sandbox.port}/http?timeout=7&max_retries=0"
    monkeypatch.setenv("AIRFLOW_CONN_LL_URI_EXTRAS", uri)
    hook = make_hook("ll_uri_extras", retry_policy=None)
    assert hook.get_balance().available_credits == 82
    assert (hook.settings.connect_timeout, hook.settings.read_timeout, hook.settings.max_retries) == (7.0, 7.0, 0)


@pytest.fixture
def dns_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every host name resolved; ``*.invalid`` fails like it would in real DNS (no network)."""
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def spy(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(str(host))
        if str(host).endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", spy)
    return looked_up


def test_plain_http_to_a_remote_host_is_refused_before_connecting(
    set_conn: ConnSetter, make_hook: HookFactory, dns_spy: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(requests.Session, "send", lambda self, request, **kw: sent.append(request.url))
    set_conn("ll_plain_http", host="http://example.invalid", password="k-remote")
    hook = make_hook("ll_plain_http")
    with pytest.raises(LocalLeadsConfigurationError, match="allow_insecure_http") as info:
        hook.get_balance()
    assert "example.invalid" in str(info.value)
    assert "k-remote" not in str(info.value)
    assert sent == []
    assert dns_spy == []  # not even a DNS look-up


@pytest.mark.parametrize("flag", [True, "true"])
def test_allow_insecure_http_lets_plain_http_through(
    set_conn: ConnSetter, make_hook: HookFactory, dns_spy: list[str], flag: object
) -> None:
    set_conn("ll_insecure_ok", host="http://example.invalid", password="k-remote", allow_insecure_http=flag)
    with pytest.raises(LocalLeadsConnectionError) as info:  # past the configuration check, then DNS fails
        make_hook("ll_insecure_ok", max_retries=0).get_balance()
    assert not isinstance(info.value, LocalLeadsConfigurationError)
    assert "example.invalid" in dns_spy


def test_plain_http_to_localhost_is_allowed(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    set_conn("ll_localhost", host=f"http://localhost:{localleads_sandbox.port}", password=localleads_sandbox.api_key)
    assert make_hook("ll_localhost").get_balance().available_credits == 82


def test_host_without_scheme_means_https(set_conn: ConnSetter, make_hook: HookFactory) -> None:
    set_conn("ll_no_scheme", host="leads.example.invalid", password="k-https")
    assert make_hook("ll_no_scheme").settings.base_url == "https://leads.example.invalid"


def test_unknown_extra_is_refused_before_any_request(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    set_conn("ll_typo", host=localleads_sandbox.url, password=localleads_sandbox.api_key, max_retires=1)
    with pytest.raises(LocalLeadsConfigurationError, match="max_retires"):
        make_hook("ll_typo").get_balance()
    assert localleads_sandbox.request_count() == 0


# ------------------------------------------------------------------------------------------ redirects


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_not_followed_and_key_not_sent_elsewhere(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory, status: int
) -> None:
    elsewhere = raw_server(answer_every_request(response_bytes()))

    def redirect(conn: socket.socket, server: RawServer) -> None:
        while server.read_request(conn) is not None:
            location = {"Location": f"{elsewhere.url}{BALANCE_PATH}"}
            conn.sendall(response_bytes(status, b"", reason="Moved", headers=location))

    origin = raw_server(redirect)
    set_conn("ll_redirect", host=origin.url, password="k-redirect-secret")
    with pytest.raises(LocalLeadsResponseError, match="redirect") as info:
        make_hook("ll_redirect").get_balance()
    assert f"HTTP {status}" in str(info.value)
    assert elsewhere.accepted == 0
    assert elsewhere.requests == []
    assert len(origin.requests) == 1  # not retried either
    assert origin.requests[0].headers["authorization"] == "Bearer k-redirect-secret"


def test_async_redirect_is_not_followed(raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory) -> None:
    elsewhere = raw_server(answer_every_request(response_bytes()))

    def redirect(conn: socket.socket, server: RawServer) -> None:
        while server.read_request(conn) is not None:
            location = {"Location": f"{elsewhere.url}{BALANCE_PATH}"}
            conn.sendall(response_bytes(302, b"", reason="Found", headers=location))

    origin = raw_server(redirect)
    set_conn("ll_aredirect", host=origin.url, password="k-redirect-secret")
    with pytest.raises(LocalLeadsResponseError, match="redirect"):
        asyncio.run(make_hook("ll_aredirect").aget_balance())
    assert elsewhere.accepted == 0
    assert len(origin.requests) == 1


# ------------------------------------------------------------------------------------------------ netrc


@pytest.fixture
def netrc_for_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "netrc"
    path.write_text("machine 127.0.0.1 login x password y\nmachine localhost login x password y\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))
    # Make sure the file is one requests would use, so the test below means something.
    assert requests.utils.get_netrc_auth("http://127.0.0.1:1/") == ("x", "y")
    return path


@pytest.mark.usefixtures("netrc_for_loopback")
def test_netrc_does_not_replace_the_bearer_header(
    raw_server: RawFactory, localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    recorder = raw_server(answer_every_request(response_bytes()))
    set_conn("ll_netrc_rec", host=recorder.url, password="k-netrc")
    make_hook("ll_netrc_rec").get_balance()
    assert recorder.requests[0].headers["authorization"] == "Bearer k-netrc"

    set_conn("ll_netrc_sandbox", host=localleads_sandbox.url, password=localleads_sandbox.api_key)
    assert make_hook("ll_netrc_sandbox").get_balance().available_credits == 82
    assert [r.auth_valid for r in localleads_sandbox.requests] == [True]


@pytest.mark.usefixtures("netrc_for_loopback")
def test_netrc_does_not_replace_the_bearer_header_async(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    recorder = raw_server(answer_every_request(response_bytes()))
    set_conn("ll_netrc_async", host=recorder.url, password="k-netrc")
    asyncio.run(make_hook("ll_netrc_async").aget_balance())
    assert recorder.requests[0].headers["authorization"] == "Bearer k-netrc"


# ------------------------------------------------------------------------------------------------ secrets


#: Loggers whose records reach a log only through Airflow's handlers, which mask.
HTTP_LIBRARIES = ("urllib3", "requests", "httpx", "httpcore")


def _canary() -> str:
    return "sk_canary_" + secrets.token_hex(16)


class LeakWitness:
    """Collects every text a secret could leak into during one scenario."""

    def __init__(self, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
        self.caplog = caplog
        self.capfd = capfd
        self.texts: list[str] = []
        self.errors: list[BaseException] = []

    def expect_error(self, call: Callable[[], Any], error_class: type[LocalLeadsError]) -> LocalLeadsError:
        with pytest.raises(error_class) as info:
            call()
        self.errors.append(info.value)
        return info.value

    def add_hook(self, hook: LocalLeadsHook) -> None:
        self.texts.append(repr(hook))
        self.texts.append(str(hook))
        if "settings" in hook.__dict__:
            self.texts.append(repr(hook.settings))
            self.texts.append(str(hook.settings))

    def assert_clean(self, *canaries: str) -> None:
        texts = list(self.texts)
        for err in self.errors:
            texts += [str(err), repr(err), "".join(traceback.format_exception(err))]
            cause: BaseException | None = err
            while cause is not None:  # every link of the chain, also str/repr, not only the traceback
                texts += [str(cause), repr(cause), repr(cause.args)]
                cause = cause.__cause__ or cause.__context__
        for record in self.caplog.records:
            text = "\n".join([self.caplog.handler.format(record), record.getMessage(), repr(record.args)])
            if record.exc_info and record.exc_info[1] is not None:
                text += "".join(traceback.format_exception(record.exc_info[1]))
            # The HTTP libraries' own DEBUG records (httpcore logs response headers: an echoed key) reach
            # a log only through Airflow's handlers, which mask: judge them as Airflow writes them. That
            # takes a masker knowing the whole key (on 2.11 another test's one-letter key masks that
            # letter everywhere, which would hide a canary too).
            if record.name.split(".")[0] in HTTP_LIBRARIES and any(c in text for c in canaries):
                for canary in (c for c in canaries if c in text):
                    assert str(redact(canary)) == "***", f"{record.name} logged a key unknown to Airflow's masker"
                text = str(redact(text))
            texts.append(text)
        out, err = self.capfd.readouterr()
        texts += [out, err]
        joined = "\n".join(texts)
        for canary in canaries:
            assert canary not in joined, f"the API key leaked: {_context(joined, canary)}"
            assert canary[len("sk_canary_") :] not in joined, "part of the API key leaked"


def _context(text: str, needle: str) -> str:
    at = text.index(needle)
    return text[max(0, at - 200) : at + len(needle) + 50]


@pytest.fixture
def witness(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> LeakWitness:
    from airflow import settings

    if "MASK_SECRETS_IN_LOGS" in vars(settings):  # Airflow 2.11 masks only while it runs a task, as here
        monkeypatch.setattr(settings, "MASK_SECRETS_IN_LOGS", True)
    caplog.set_level(logging.DEBUG)  # the root logger: every library's debug output
    for name in ("urllib3", "httpx", "httpcore", "airflow", "airflow_provider_localleads", "airflow.task"):
        caplog.set_level(logging.DEBUG, logger=name)
    return LeakWitness(caplog, capfd)


@pytest.fixture
def canary_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(api_key=_canary()) as server:
        yield server


def test_canary_key_never_leaks_on_success(
    canary_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory, witness: LeakWitness
) -> None:
    set_conn("ll_canary_ok", host=canary_sandbox.url, password=canary_sandbox.api_key)
    hook = make_hook("ll_canary_ok")
    hook.get_balance()
    hook.list_transactions(limit=2)
    assert len(list(hook.iter_transactions(page_size=3))) == canary_sandbox.state.transaction_count
    ok, message = hook.test_connection()
    assert ok
    witness.texts.append(message)
    asyncio.run(hook.aget_balance())
    witness.add_hook(hook)
    witness.assert_clean(canary_sandbox.api_key)


def test_canary_keys_never_leak_on_401(
    canary_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory, witness: LeakWitness
) -> None:
    wrong = _canary()
    set_conn("ll_canary_401", host=canary_sandbox.url, password=wrong)
    hook = make_hook("ll_canary_401")
    witness.expect_error(hook.get_balance, LocalLeadsAuthenticationError)
    witness.expect_error(lambda: asyncio.run(hook.aget_balance()), LocalLeadsAuthenticationError)
    ok, message = hook.test_connection()
    assert not ok
    witness.texts.append(message)
    witness.add_hook(hook)
    witness.assert_clean(wrong, canary_sandbox.api_key)


def test_canary_key_never_leaks_on_retried_server_errors(
    canary_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory, witness: LeakWitness
) -> None:
    set_conn("ll_canary_5xx", host=canary_sandbox.url, password=canary_sandbox.api_key)
    hook = make_hook("ll_canary_5xx")
    canary_sandbox.fail_next(503, times=3)
    witness.expect_error(hook.get_balance, LocalLeadsServerError)
    canary_sandbox.fail_next(502, times=3, body="<html><h1>502 Bad Gateway</h1></html>", content_type="text/html")
    witness.expect_error(lambda: asyncio.run(hook.aget_balance()), LocalLeadsServerError)
    canary_sandbox.fail_next(503, times=1)
    hook.get_balance()  # retried, logs a warning, then succeeds
    assert canary_sandbox.request_count(BALANCE_PATH) == 8
    witness.add_hook(hook)
    witness.assert_clean(canary_sandbox.api_key)


def test_canary_key_never_leaks_on_timeouts(
    canary_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory, witness: LeakWitness
) -> None:
    set_conn("ll_canary_slow", host=canary_sandbox.url, password=canary_sandbox.api_key, max_retries=1)
    hook = make_hook("ll_canary_slow", timeout=0.3)
    canary_sandbox.slow_next(1.0, times=2)
    witness.expect_error(hook.get_balance, LocalLeadsConnectionError)
    canary_sandbox.slow_next(1.0, times=2)
    witness.expect_error(lambda: asyncio.run(hook.aget_balance()), LocalLeadsConnectionError)
    witness.add_hook(hook)
    witness.assert_clean(canary_sandbox.api_key)


def test_canary_key_never_leaks_on_connection_refused(
    set_conn: ConnSetter, make_hook: HookFactory, witness: LeakWitness
) -> None:
    key = _canary()
    set_conn("ll_canary_refused", host=f"http://127.0.0.1:{closed_port()}", password=key, max_retries=1)
    hook = make_hook("ll_canary_refused")
    witness.expect_error(hook.get_balance, LocalLeadsConnectionError)
    witness.expect_error(lambda: asyncio.run(hook.aget_balance()), LocalLeadsConnectionError)
    ok, message = hook.test_connection()
    assert not ok
    witness.texts.append(message)
    witness.add_hook(hook)
    witness.assert_clean(key)


@pytest.mark.parametrize("kind", ["not_json", "html", "truncated", "missing_field", "success_false_object"])
def test_canary_key_never_leaks_on_bad_bodies(
    canary_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory, witness: LeakWitness, kind: str
) -> None:
    set_conn("ll_canary_bad", host=canary_sandbox.url, password=canary_sandbox.api_key)
    hook = make_hook("ll_canary_bad")
    canary_sandbox.malformed_next(kind)
    witness.expect_error(hook.get_balance, LocalLeadsResponseError)
    canary_sandbox.malformed_next(kind)
    witness.expect_error(lambda: asyncio.run(hook.aget_balance()), LocalLeadsResponseError)
    witness.add_hook(hook)
    witness.assert_clean(canary_sandbox.api_key)


def test_canary_key_echoed_back_by_the_server_is_redacted(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory, witness: LeakWitness
) -> None:
    """A misconfigured proxy that quotes the Authorization header back (in a body, or a Location)."""

    def echo(conn: socket.socket, server: RawServer) -> None:
        while (request := server.read_request(conn)) is not None:
            auth = request.headers.get("authorization", "")
            with server.lock:
                count = len(server.requests)
            if count % 3 == 1:
                body = f"<html><body><p>Rejected header: Authorization: {auth}</p></body></html>".encode()
                conn.sendall(response_bytes(502, body, reason="Bad Gateway"))
            elif count % 3 == 2:
                body = f'{{"success": false, "error": "key {auth[7:]} is revoked"}}'.encode()
                conn.sendall(response_bytes(200, body))
            else:
                headers = {"Location": f"https://login.example.invalid/?token={auth[7:]}"}
                conn.sendall(response_bytes(302, b"", reason="Found", headers=headers))

    server = raw_server(echo)
    key = _canary()
    set_conn("ll_canary_echo", host=server.url, password=key, max_retries=0)
    hook = make_hook("ll_canary_echo")
    witness.expect_error(hook.get_balance, LocalLeadsServerError)
    witness.expect_error(hook.get_balance, LocalLeadsResponseError)
    redirect = witness.expect_error(hook.get_balance, LocalLeadsResponseError)
    assert "redirect" in str(redirect)
    witness.expect_error(lambda: asyncio.run(hook.aget_balance()), LocalLeadsServerError)
    assert all(r.headers["authorization"] == f"Bearer {key}" for r in server.requests)
    assert "***" in str(witness.errors[0])  # the echo was there, and redacted
    witness.add_hook(hook)
    witness.assert_clean(key)


def _echo_in_a_header(conn: socket.socket, server: RawServer) -> None:
    """A 503 quoting the Authorization header back in a response header (httpcore logs those at DEBUG)."""
    while (request := server.read_request(conn)) is not None:
        auth = request.headers.get("authorization", "")
        conn.sendall(response_bytes(503, b'{"success": false}', reason="Echo", headers={"X-Echo": auth}))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_key_from_the_environment_is_given_to_airflows_masker(
    raw_server: RawFactory,
    set_conn: ConnSetter,
    make_hook: HookFactory,
    monkeypatch: pytest.MonkeyPatch,
    witness: LeakWitness,
    mode: str,
) -> None:
    """Airflow masks a connection's password when it looks it up; LOCALLEADS_API_KEY only if the hook says so."""
    key = _canary()
    assert str(redact(f"before {key}")) != "before ***"  # unknown to the masker until the hook reads it
    server = raw_server(_echo_in_a_header)
    set_conn("ll_env_masked", host=server.url, max_retries=0)
    monkeypatch.setenv("LOCALLEADS_API_KEY", key)
    witness.expect_error(lambda: read_balance(make_hook("ll_env_masked"), mode), LocalLeadsServerError)
    assert server.requests[0].headers["authorization"] == f"Bearer {key}"
    assert str(redact(f"after {key}")) == "after ***"
    witness.assert_clean(key)


def test_the_trigger_path_tells_the_supervisor_off_the_event_loop(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mask_secret tells the supervisor synchronously: on the triggerer's own loop thread that raises on 3.0/3.1."""
    task_runner = pytest.importorskip("airflow.sdk.execution_time.task_runner", reason="Airflow 2 has no supervisor")
    told: list[tuple[object, bool]] = []

    class Supervisor:
        """Records each secret it is told, and whether the caller's thread was running an event loop."""

        def send(self, msg: Any) -> None:
            try:
                asyncio.get_running_loop()
                told.append((getattr(msg, "value", None), True))
            except RuntimeError:
                told.append((getattr(msg, "value", None), False))

        async def asend(self, msg: Any) -> None:
            told.append((getattr(msg, "value", None), True))

    set_conn("ll_env_trigger", host=localleads_sandbox.url)
    monkeypatch.setenv("LOCALLEADS_API_KEY", localleads_sandbox.api_key)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", Supervisor(), raising=False)
    assert asyncio.run(make_hook("ll_env_trigger").aget_balance()).available_credits == 82
    assert (localleads_sandbox.api_key, False) in told
    assert (localleads_sandbox.api_key, True) not in told
