"""Promise 4 (hook level): the API key never shows up anywhere but the Authorization header it is for.

With a canary key, every hook-level path (success, 401, 5xx retried, timeout, connection refused,
bad JSON, an HTML page, a server that echoes the key back) runs through the synchronous and the
asynchronous hook, with every logger at DEBUG and stdout/stderr captured (Airflow 3 logs through
structlog to stdout). The key must appear in no log record or captured output, in no exception
text, traceback (``traceback.format_exception``, chained causes included), repr, attribute of any
exception in the chain, or pickle of the error. The HTTP libraries' own DEBUG records (httpcore
logs response headers, so an echoed key) are judged as Airflow writes them, through its masker:
the provider leaves masking to Airflow, which masks the connection's password itself. Redirects
are never followed (the header cannot reach another origin) and a NETRC file cannot replace the
header, on both paths.
"""

from __future__ import annotations

import logging
import pickle
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import redact
from loopback_support import (
    FAST,
    ConnSetter,
    RawFactory,
    RawRequest,
    RawServer,
    answer_every_request,
    closed_port,
    response_bytes,
)
from reliability_support import call

from airflow_provider_localleads.exceptions import (
    LocalLeadsAuthenticationError,
    LocalLeadsConnectionError,
    LocalLeadsError,
    LocalLeadsResponseError,
    LocalLeadsServerError,
)
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

CANARY = "llk_live_CANARY_5f3a9c1e7b2d4a6f"
MODES = ["sync", "async"]


@pytest.fixture(autouse=True)
def _masking_as_in_a_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow 2.11 masks log output only while it runs a task (``airflow tasks run`` sets this); so do we."""
    from airflow import settings

    if "MASK_SECRETS_IN_LOGS" in vars(settings):  # 3.x masks always and has no such flag
        monkeypatch.setattr(settings, "MASK_SECRETS_IN_LOGS", True)


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def assert_no_canary(*texts: str) -> None:
    for text in texts:
        assert CANARY not in text, f"the API key leaked: ...{text[max(0, text.find(CANARY) - 80) :][:200]}..."


#: Loggers whose records reach a log only through Airflow's handlers, which mask (see the docstring).
HTTP_LIBRARIES = ("urllib3", "requests", "httpx", "httpcore")


def evidence_of(err: BaseException | None, hook: LocalLeadsHook, caplog: Any, capfd: Any) -> list[str]:
    """Every place the key could have leaked to, as text."""
    texts: list[str] = []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        text = formatter.format(record) + repr(record.args)  # includes exc_info tracebacks
        if record.name.split(".")[0] in HTTP_LIBRARIES and CANARY in text:
            # As Airflow writes it, masked: that takes a masker knowing the whole key (on 2.11 another
            # test's one-letter key masks that letter everywhere, which would hide the canary too).
            assert str(redact(CANARY)) == "***", f"{record.name} logged the key, unknown to Airflow's masker"
            text = str(redact(text))
        texts.append(text)
    out, errout = capfd.readouterr()
    texts += [out, errout, repr(hook), repr(hook.__dict__)]
    if err is not None:
        texts += ["".join(traceback.format_exception(err)), str(err), repr(err)]
        for link in _chain(err):
            texts += [str(link), repr(link), repr(getattr(link, "args", ())), repr(vars(link))]
            texts += [repr(v) for v in vars(link).values()]
        texts.append(repr(pickle.dumps(err)))
    return texts


def _never_answers(conn: Any, server: RawServer) -> None:
    server.read_request(conn)
    server.stopping.wait()


def _echo_key_everywhere(seen: RawRequest) -> bytes:
    auth = seen.headers.get("authorization", "")
    body = b'{"success": false, "error": "bad token ' + auth.encode() + b'"}'
    return response_bytes(503, body, reason="Echo", headers={"X-Request-Id": auth[:100], "Retry-After": "0"})


SCENARIOS: dict[str, tuple[Callable[[RawFactory], str], type[LocalLeadsError] | None]] = {
    "success": (lambda raw: raw(answer_every_request(response_bytes())).url, None),
    "401": (
        lambda raw: raw(answer_every_request(response_bytes(401, b'{"success":false,"error":"nope"}', reason="U"))).url,
        LocalLeadsAuthenticationError,
    ),
    "5xx-retried": (
        lambda raw: raw(answer_every_request(response_bytes(502, b'{"success":false,"error":"gw"}', reason="B"))).url,
        LocalLeadsServerError,
    ),
    "timeout": (lambda raw: raw(_never_answers).url, LocalLeadsConnectionError),
    "connection-refused": (lambda raw: f"http://127.0.0.1:{closed_port()}", LocalLeadsConnectionError),
    "bad-json": (
        lambda raw: raw(answer_every_request(response_bytes(body=b'{"success": tr'))).url,
        LocalLeadsResponseError,
    ),
    "html-page": (
        lambda raw: raw(answer_every_request(response_bytes(body=b"<html>login</html>", content_type="text/html"))).url,
        LocalLeadsResponseError,
    ),
    "server-echoes-the-key": (lambda raw: raw(answer_every_request(_echo_key_everywhere)).url, LocalLeadsServerError),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_canary_key_leaks_nowhere(
    raw_server: RawFactory,
    set_conn: ConnSetter,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    mode: str,
    scenario: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    url_of, expected = SCENARIOS[scenario]
    set_conn("rel_canary", host=url_of(raw_server), password=CANARY, timeout=0.3, max_retries=2)
    hook = LocalLeadsHook("rel_canary", retry_policy=FAST)
    err: LocalLeadsError | None = None
    try:
        call(hook, mode)
    except LocalLeadsError as caught:
        err = caught
    finally:
        hook.close()
    assert type(err) is expected if expected is not None else err is None
    if scenario in ("5xx-retried", "timeout", "connection-refused", "server-echoes-the-key"):
        assert any("retrying in" in r.getMessage() for r in caplog.records) or "retrying in" in capfd.readouterr()[0]
    assert_no_canary(*evidence_of(err, hook, caplog, capfd))


def test_the_key_the_server_echoes_is_redacted_not_dropped(raw_server: RawFactory, set_conn: ConnSetter) -> None:
    server = raw_server(answer_every_request(_echo_key_everywhere))
    set_conn("rel_echo", host=server.url, password=CANARY, max_retries=0)
    with pytest.raises(LocalLeadsServerError) as info:
        LocalLeadsHook("rel_echo").get_balance()
    assert "bad token Bearer ***" in str(info.value)
    assert info.value.request_id == "Bearer ***"


def _redirect_to(target: str, status: int) -> Callable[[RawRequest], bytes]:
    return lambda seen: response_bytes(status, b"", reason="Moved", headers={"Location": target + seen.target})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_so_the_key_never_reaches_another_origin(
    raw_server: RawFactory, set_conn: ConnSetter, mode: str, status: int
) -> None:
    elsewhere = raw_server(answer_every_request(response_bytes()))
    origin = raw_server(answer_every_request(_redirect_to(elsewhere.url, status)))
    set_conn("rel_redirect", host=origin.url, password=CANARY, max_retries=2)
    with pytest.raises(LocalLeadsResponseError, match="redirects are not followed") as info:
        call(LocalLeadsHook("rel_redirect", retry_policy=FAST), mode)
    assert not info.value.transient
    assert len(origin.requests) == 1  # not retried either
    assert origin.requests[0].headers["authorization"] == f"Bearer {CANARY}"
    assert elsewhere.accepted == 0
    assert elsewhere.requests == []


@pytest.mark.parametrize("mode", MODES)
def test_netrc_cannot_replace_the_authorization_header(
    raw_server: RawFactory, set_conn: ConnSetter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(
        "machine 127.0.0.1 login netrc-user password NETRC_PASSWORD\ndefault login any password ANY_PASSWORD\n"
    )
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text(netrc.read_text())
    (tmp_path / ".netrc").chmod(0o600)
    server = raw_server(answer_every_request(response_bytes()))
    set_conn("rel_netrc", host=server.url, password=CANARY)
    assert call(LocalLeadsHook("rel_netrc"), mode).available_credits == 82
    assert [s.headers.get("authorization") for s in server.requests] == [f"Bearer {CANARY}"]


@pytest.mark.parametrize("mode", MODES)
def test_the_key_goes_only_in_the_authorization_header(raw_server: RawFactory, set_conn: ConnSetter, mode: str) -> None:
    server = raw_server(answer_every_request(response_bytes()))
    set_conn("rel_where", host=server.url, password=CANARY)
    call(LocalLeadsHook("rel_where"), mode)
    (seen,) = server.requests
    assert CANARY not in seen.target  # never in the URL or query string
    assert [name for name, value in seen.headers.items() if CANARY in value] == ["authorization"]
