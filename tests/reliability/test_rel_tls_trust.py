"""One CA bundle for both paths: what the worker (requests) trusts, the triggerer (httpx) trusts too.

A real TLS server on loopback presents a self-signed certificate for 127.0.0.1; each test names it
(or a wrong path) in one of the environment variables and calls the hook in both modes. The suite's
conftest clears every CA variable before each test.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from loopback_support import ConnSetter, RawFactory, answer_every_request, response_bytes
from reliability_support import call, self_signed_server_context

from airflow_provider_localleads.exceptions import LocalLeadsConfigurationError, LocalLeadsTLSError
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

MODES = ["sync", "async"]


@pytest.fixture
def tls_server_url(raw_server: RawFactory, tmp_path: Path) -> tuple[str, Path]:
    cert = tmp_path / "company-ca.pem"
    server = raw_server(answer_every_request(response_bytes()), tls=self_signed_server_context(str(cert)))
    return server.url, cert


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_a_ca_named_by_any_variable_is_trusted_by_both_paths(
    variable: str,
    mode: str,
    tls_server_url: tuple[str, Path],
    set_conn: ConnSetter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, cert = tls_server_url
    if variable == "SSL_CERT_DIR":  # OpenSSL looks certificates up in a directory by subject hash
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("needs the openssl command to name the certificate by its subject hash")
        digest = subprocess.run(
            [openssl, "x509", "-hash", "-noout", "-in", str(cert)], capture_output=True, text=True, check=True
        ).stdout.strip()
        hashed = cert.parent / "hashed"
        hashed.mkdir()
        (hashed / f"{digest}.0").write_bytes(cert.read_bytes())
        monkeypatch.setenv(variable, str(hashed))
    else:
        monkeypatch.setenv(variable, str(cert))
    set_conn("tls_trusted", host=url, password="k")
    assert call(LocalLeadsHook("tls_trusted"), mode).available_credits == 82


@pytest.mark.parametrize("mode", MODES)
def test_without_the_ca_the_certificate_is_refused(
    mode: str, tls_server_url: tuple[str, Path], set_conn: ConnSetter
) -> None:
    url, _ = tls_server_url
    set_conn("tls_untrusted", host=url, password="k")
    with pytest.raises(LocalLeadsTLSError) as info:
        call(LocalLeadsHook("tls_untrusted"), mode)
    assert "SSL_CERT_FILE" in str(info.value)
    # The server does speak TLS: no claim that it answers plain http, only the loopback hint.
    assert "answers plain http" not in str(info.value)
    assert "is on this machine and may serve plain http" in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_a_missing_ca_bundle_names_the_variable(
    mode: str, tls_server_url: tuple[str, Path], set_conn: ConnSetter, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_server_url
    monkeypatch.setenv("SSL_CERT_FILE", str(cert.with_name("gone.pem")))
    set_conn("tls_missing", host=url, password="k")
    with pytest.raises(LocalLeadsConfigurationError) as info:
        call(LocalLeadsHook("tls_missing"), mode)
    message = str(info.value)
    assert "SSL_CERT_FILE" in message
    assert "gone.pem" in message
    assert "unset SSL_CERT_FILE" in message


@pytest.mark.parametrize("mode", MODES)
def test_a_ca_bundle_that_is_not_certificates_is_refused_before_any_request(
    mode: str, tls_server_url: tuple[str, Path], set_conn: ConnSetter, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_server_url
    garbage = cert.with_name("not-a-bundle.pem")
    garbage.write_text("this is not PEM\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(garbage))
    set_conn("tls_garbage", host=url, password="k")
    with pytest.raises(LocalLeadsConfigurationError) as info:
        call(LocalLeadsHook("tls_garbage"), mode)
    assert "not-a-bundle.pem" in str(info.value)
    assert "REQUESTS_CA_BUNDLE" in str(info.value)
    assert "PEM certificates" in str(info.value)
