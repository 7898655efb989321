"""Unit tests for reading a ``localleads`` Airflow connection into settings (``_settings.py``)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Connection

from airflow_provider_localleads.client.settings import (
    API_KEY_ENV_VAR,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    ConnectionSettings,
    is_loopback,
    settings_from_connection,
)
from airflow_provider_localleads.exceptions import LocalLeadsConfigurationError

KEY = "sk_canary_9f8e7d"
PRODUCTION = "https://leadsapi.postorbit.io"


def make_conn(
    host: str | None = None,
    *,
    password: str | None = KEY,
    extra: dict[str, Any] | str | None = None,
    port: int | None = None,
    schema: str | None = None,
    conn_id: str = "c",
    login: str | None = None,
) -> Connection:
    return Connection(
        conn_id=conn_id,
        conn_type="localleads",
        host=host,
        login=login,
        password=password,
        port=port,
        schema=schema,
        extra=json.dumps(extra) if isinstance(extra, dict) else extra,
    )


def settings_for(
    host: str | None = None, *, environ: dict[str, str] | None = None, **kwargs: Any
) -> ConnectionSettings:
    return settings_from_connection(make_conn(host, **kwargs), environ=environ if environ is not None else {})


# ---------------------------------------------------------------------------------------------
# base URL
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", [None, "", "   "])
def test_default_host_is_production(host: str | None) -> None:
    settings = settings_for(host)
    assert settings.base_url == PRODUCTION
    assert settings.conn_id == "c"
    assert settings.api_key == KEY


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("leadsapi.postorbit.io", PRODUCTION, id="no-scheme-means-https"),
        pytest.param("api.example.com:8443", "https://api.example.com:8443", id="no-scheme-with-port"),
        pytest.param("https://leadsapi.postorbit.io/", PRODUCTION, id="trailing-slash-stripped"),
        pytest.param("https://leadsapi.postorbit.io///", PRODUCTION, id="trailing-slashes-stripped"),
        pytest.param("https://api.example.com/prefix", "https://api.example.com/prefix", id="path-prefix-kept"),
        pytest.param("https://api.example.com/a/b/", "https://api.example.com/a/b", id="path-prefix-slash-stripped"),
        pytest.param("  https://api.example.com  ", "https://api.example.com", id="surrounding-space-stripped"),
        pytest.param("HTTPS://api.example.com", "https://api.example.com", id="scheme-case-insensitive"),
    ],
)
def test_host_is_normalised(host: str, expected: str) -> None:
    assert settings_for(host).base_url == expected


@pytest.mark.parametrize(
    "host",
    [
        "http://127.0.0.1:8080",
        "http://127.0.0.2",
        "http://localhost",
        "http://LOCALHOST:5000",
        "http://[::1]:9",
        "http://[::1]",
    ],
)
def test_plain_http_to_loopback_is_allowed(host: str) -> None:
    assert settings_for(host).base_url.lower() == host.lower()


@pytest.mark.parametrize(
    "host",
    [
        "http://example.com",
        "http://10.0.0.5:8080",
        "http://localhost.example.com",  # looks like localhost, is not
        "http://127.0.0.1.nip.io",  # looks like loopback, is not
    ],
)
def test_plain_http_to_other_hosts_is_refused_naming_the_extra(host: str) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="allow_insecure_http") as info:
        settings_for(host)
    assert "'c'" in str(info.value)
    # The host name is the first thing to check; the unsafe switch is the deliberate last resort.
    message = str(info.value)
    assert message.index("Check the host name first") < message.index("allow_insecure_http")


@pytest.mark.parametrize("host", ["http://localhots:8765", "http://locahost:8765", "http://lcoalhost"])
def test_plain_http_to_a_misspelt_localhost_suggests_it(host: str) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match=r"which is not this machine \(did you mean localhost\?\)"):
        settings_for(host)


def test_plain_http_to_a_remote_host_suggests_no_localhost() -> None:
    with pytest.raises(LocalLeadsConfigurationError) as info:
        settings_for("http://example.com")
    assert "did you mean" not in str(info.value)


def test_a_key_in_the_login_field_is_named_as_the_likely_mistake_without_quoting_it() -> None:
    # localleads://canary-KEY@host: the colon before the key is missing, so Airflow puts it in login
    # (the URI is parsed by the metadata model's Connection on every line; the SDK's takes no uri on 3.1).
    from airflow.models.connection import Connection as StoredConnection

    conn = StoredConnection(conn_id="c", uri=f"localleads://{KEY}@127.0.0.1:8765/http")
    assert (conn.login, conn.password) == (KEY, None)
    with pytest.raises(LocalLeadsConfigurationError) as info:
        settings_from_connection(conn, environ={})
    message = str(info.value)
    assert "the login field is set: that is probably the key in the wrong field" in message
    assert "localleads://:<API key>@host" in message
    assert KEY not in message


def test_a_login_with_a_password_or_an_environment_key_is_no_error() -> None:
    assert settings_for("https://x.example", login="someone").api_key == KEY
    env_key = settings_for("https://x.example", login="someone", password=None, environ={"LOCALLEADS_API_KEY": "k2"})
    assert env_key.api_key == "k2"


@pytest.mark.parametrize("flag", [True, "true", "True", " TRUE "], ids=repr)
def test_plain_http_allowed_with_allow_insecure_http(flag: object) -> None:
    settings = settings_for("http://example.com", extra={"allow_insecure_http": flag})
    assert settings.base_url == "http://example.com"


@pytest.mark.parametrize("flag", [False, "false", "", None], ids=repr)
def test_allow_insecure_http_false_or_unset_still_refuses(flag: object) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="allow_insecure_http"):
        settings_for("http://example.com", extra={"allow_insecure_http": flag})


@pytest.mark.parametrize("flag", ["yes", 1, "1", "on", []], ids=repr)
def test_allow_insecure_http_must_be_a_boolean(flag: object) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="'allow_insecure_http' must be true or false"):
        settings_for("https://example.com", extra={"allow_insecure_http": flag})


def test_connection_schema_http_is_used_for_a_host_without_scheme() -> None:
    assert settings_for("localhost:8080", schema="http").base_url == "http://localhost:8080"


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("api.example.com", 8443, "https://api.example.com:8443"),
        ("https://api.example.com/prefix", 8443, "https://api.example.com:8443/prefix"),
        ("http://127.0.0.1", 8080, "http://127.0.0.1:8080"),
        ("http://[::1]", 9, "http://[::1]:9"),
        ("https://api.example.com:9000", 8443, "https://api.example.com:9000"),  # URL's own port wins
    ],
)
def test_connection_port_appended_when_host_has_none(host: str, port: int, expected: str) -> None:
    assert settings_for(host, port=port).base_url == expected


@pytest.mark.parametrize(
    "host",
    ["https://user:pass@api.example.com", "https://user@api.example.com", "https://:secret@api.example.com"],
)
def test_credentials_in_host_are_refused(host: str) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="must not contain credentials") as info:
        settings_for(host)
    assert "pass" not in str(info.value).replace("password field", "")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    "host", ["https://api.example.com?x=1", "https://api.example.com/#frag", "api.example.com?k=v"]
)
def test_query_or_fragment_in_host_is_refused(host: str) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="without query or fragment"):
        settings_for(host)


def test_empty_query_in_host_is_dropped() -> None:
    assert settings_for("https://api.example.com/?").base_url == "https://api.example.com"


@pytest.mark.parametrize("host", ["ftp://api.example.com", "file:///etc/passwd", "ws://localhost"])
def test_bad_scheme_is_refused(host: str) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="must use https://"):
        settings_for(host)


@pytest.mark.parametrize("host", ["https://api.example.com:abc", "https://api.example.com:99999", "http://[::1"])
def test_invalid_url_is_refused(host: str) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="is not a valid URL"):
        settings_for(host)


def test_host_without_host_name_is_refused() -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="has no host name"):
        settings_for("https://")


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("[::1]", True),
        ("example.com", False),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("localhost.evil.com", False),
    ],
)
def test_is_loopback(hostname: str, expected: bool) -> None:
    assert is_loopback(hostname) is expected


# ---------------------------------------------------------------------------------------------
# API key
# ---------------------------------------------------------------------------------------------


def test_api_key_from_password_wins_over_environment() -> None:
    settings = settings_for(environ={API_KEY_ENV_VAR: "sk_from_env"})
    assert settings.api_key == KEY


def test_api_key_password_is_stripped() -> None:
    assert settings_for(password=f"  {KEY}\n").api_key == KEY


@pytest.mark.parametrize("password", [None, "", "   "])
def test_api_key_from_environment_when_password_empty(password: str | None) -> None:
    settings = settings_for(password=password, environ={API_KEY_ENV_VAR: f" {KEY} "})
    assert settings.api_key == KEY


def test_api_key_from_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV_VAR, KEY)
    assert settings_from_connection(make_conn(password=None)).api_key == KEY


@pytest.mark.parametrize("env_value", [None, "", "  "])
def test_missing_api_key_names_both_sources(env_value: str | None) -> None:
    environ = {} if env_value is None else {API_KEY_ENV_VAR: env_value}
    with pytest.raises(LocalLeadsConfigurationError) as info:
        settings_for(password=None, environ=environ)
    message = str(info.value)
    assert "password" in message
    assert API_KEY_ENV_VAR in message
    assert "'c'" in message


# ---------------------------------------------------------------------------------------------
# extras
# ---------------------------------------------------------------------------------------------


def test_defaults_without_extras() -> None:
    settings = settings_for()
    assert settings.connect_timeout == DEFAULT_CONNECT_TIMEOUT
    assert settings.read_timeout == DEFAULT_READ_TIMEOUT
    assert settings.max_retries == DEFAULT_MAX_RETRIES


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12, 12.0), (2.5, 2.5), ("7", 7.0), (" 0.25 ", 0.25), ("1e1", 10.0)],
    ids=repr,
)
def test_timeout_extra_sets_both_timeouts(value: object, expected: float) -> None:
    settings = settings_for(extra={"timeout": value})
    assert settings.connect_timeout == expected
    assert settings.read_timeout == expected


@pytest.mark.parametrize("value", ["", "  ", None], ids=repr)
def test_empty_timeout_extra_means_default(value: object) -> None:
    settings = settings_for(extra={"timeout": value})
    assert (settings.connect_timeout, settings.read_timeout) == (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)


@pytest.mark.parametrize("value", [0, -1, "0", "-1", "abc", True, False, "nan", "inf", [], {}], ids=repr)
def test_invalid_timeout_extra_is_refused(value: object) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="extra 'timeout' must be a positive number"):
        settings_for(extra={"timeout": value})


def test_nan_timeout_in_extra_json_is_refused() -> None:
    # Python's json accepts the NaN literal, and Airflow parses the extra with it.
    with pytest.raises(LocalLeadsConfigurationError, match="extra 'timeout'"):
        settings_for(extra='{"timeout": NaN}')


@pytest.mark.parametrize(("value", "expected"), [("3", 3), (3, 3), (" 4 ", 4), (0, 0), ("0", 0), (10, 10), (5.0, 5)])
def test_max_retries_extra(value: object, expected: int) -> None:
    assert settings_for(extra={"max_retries": value}).max_retries == expected


@pytest.mark.parametrize("value", ["", " ", None], ids=repr)
def test_empty_max_retries_extra_means_default(value: object) -> None:
    assert settings_for(extra={"max_retries": value}).max_retries == DEFAULT_MAX_RETRIES


@pytest.mark.parametrize("value", [-1, "-1", 11, "11", "x", True, False, 1.5, "1.5", [], "3 retries"], ids=repr)
def test_invalid_max_retries_extra_is_refused(value: object) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="extra 'max_retries' must be a whole number from 0 to 10"):
        settings_for(extra={"max_retries": value})


def test_max_retries_extra_with_non_ascii_digit_is_a_configuration_error() -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="max_retries"):
        settings_for(extra={"max_retries": "²"})


@pytest.mark.parametrize(
    ("extra", "timeout", "retries"),
    [
        ({"extra__localleads__timeout": "9"}, 9.0, DEFAULT_MAX_RETRIES),
        ({"extra__localleads__max_retries": "4"}, DEFAULT_CONNECT_TIMEOUT, 4),
        ({"extra__localleads__timeout": 3, "extra__localleads__max_retries": 1}, 3.0, 1),
    ],
)
def test_legacy_prefixed_extras_are_accepted(extra: dict[str, Any], timeout: float, retries: int) -> None:
    settings = settings_for(extra=extra)
    assert settings.connect_timeout == timeout
    assert settings.max_retries == retries


def test_legacy_prefixed_allow_insecure_http_is_accepted() -> None:
    settings = settings_for("http://example.com", extra={"extra__localleads__allow_insecure_http": "true"})
    assert settings.base_url == "http://example.com"


@pytest.mark.parametrize("key", ["max_retry", "timeout_seconds", "extra__http__timeout", "api_key"])
def test_unknown_extra_is_refused_naming_it(key: str) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match=f"unknown extra '{key}'") as info:
        settings_for(extra={key: 1})
    assert "timeout, max_retries, allow_insecure_http" in str(info.value)


@pytest.mark.parametrize("extra", ['"just a string"', "[1, 2]"])
def test_extra_that_is_not_a_json_object_is_refused(extra: str) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="extra is not a JSON object"):
        settings_for(extra=extra)


def test_hook_overrides_win_over_extras() -> None:
    conn = make_conn(extra={"timeout": 30, "max_retries": 5})
    settings = settings_from_connection(conn, environ={}, timeout=2.5, max_retries=0)

    assert settings.connect_timeout == 2.5
    assert settings.read_timeout == 2.5
    assert settings.max_retries == 0


def test_hook_overrides_apply_without_extras() -> None:
    settings = settings_from_connection(make_conn(), environ={}, timeout=4, max_retries=7)
    assert (settings.connect_timeout, settings.read_timeout, settings.max_retries) == (4, 4, 7)


@pytest.mark.parametrize("timeout", [0, -1.0, math.nan, math.inf])
def test_invalid_timeout_override_is_refused(timeout: float) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="timeout must be a positive number"):
        settings_from_connection(make_conn(), environ={}, timeout=timeout)


@pytest.mark.parametrize("max_retries", [-1, True, 1.5, "3"], ids=repr)
def test_invalid_max_retries_override_is_refused(max_retries: Any) -> None:
    with pytest.raises(LocalLeadsConfigurationError, match="max_retries must be a whole number"):
        settings_from_connection(make_conn(), environ={}, max_retries=max_retries)


# ---------------------------------------------------------------------------------------------
# the API key never leaks
# ---------------------------------------------------------------------------------------------


def test_repr_and_str_of_settings_do_not_contain_the_api_key() -> None:
    settings = settings_for()
    assert KEY not in repr(settings)
    assert KEY not in str(settings)
    assert "base_url='https://leadsapi.postorbit.io'" in repr(settings)


def test_settings_are_frozen() -> None:
    settings = settings_for()
    with pytest.raises(AttributeError):
        settings.api_key = "other"  # type: ignore[misc]


BROKEN_CONNECTIONS: list[Any] = [
    pytest.param({"host": "http://example.com"}, id="insecure-http"),
    pytest.param({"host": "ftp://example.com"}, id="bad-scheme"),
    pytest.param({"host": "https://user:pw@example.com"}, id="credentials"),
    pytest.param({"host": "https://example.com?x=1"}, id="query"),
    pytest.param({"host": "https://example.com:abc"}, id="bad-port"),
    pytest.param({"host": "https://"}, id="no-hostname"),
    pytest.param({"extra": {"timeout": "abc"}}, id="bad-timeout"),
    pytest.param({"extra": {"max_retries": 99}}, id="bad-max-retries"),
    pytest.param({"extra": {"allow_insecure_http": "maybe"}}, id="bad-flag"),
    pytest.param({"extra": {"nope": 1}}, id="unknown-extra"),
    pytest.param({"extra": "[1]"}, id="extra-not-object"),
]


@pytest.mark.parametrize("kwargs", BROKEN_CONNECTIONS)
@pytest.mark.parametrize("key_source", ["password", "environment"])
def test_error_messages_never_contain_the_api_key(kwargs: dict[str, Any], key_source: str) -> None:
    password = KEY if key_source == "password" else None
    environ = {API_KEY_ENV_VAR: KEY} if key_source == "environment" else {}
    with pytest.raises(LocalLeadsConfigurationError) as info:
        settings_from_connection(make_conn(password=password, **kwargs), environ=environ)
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)


def test_error_from_override_never_contains_the_api_key() -> None:
    with pytest.raises(LocalLeadsConfigurationError) as info:
        settings_from_connection(make_conn(), environ={}, timeout=-1)
    assert KEY not in str(info.value)


@pytest.mark.parametrize("host", [f"https://{KEY}@leadsapi.postorbit.io:abc", f"https://{KEY}@", f"https://u:{KEY}@"])
def test_error_messages_never_echo_credentials_put_in_the_host(host: str) -> None:
    with pytest.raises(LocalLeadsConfigurationError) as info:
        settings_for(host)
    assert KEY not in str(info.value)


def test_redact_replaces_the_api_key() -> None:
    settings = settings_for()
    text = f"Authorization: Bearer {KEY}; again {KEY}"
    assert settings.redact(text) == "Authorization: Bearer ***; again ***"


def test_redact_with_empty_key_leaves_text_alone() -> None:
    settings = ConnectionSettings(conn_id="c", base_url=PRODUCTION, api_key="")
    assert settings.redact("nothing to hide") == "nothing to hide"
