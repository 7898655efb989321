"""A ``localleads`` Airflow connection validated into plain settings, the same rules for workers and
the triggerer, testable without any HTTP."""

from __future__ import annotations

import ipaddress
import math
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_localleads import PRODUCTION_BASE_URL
from airflow_provider_localleads.client.values import python_whole_number, whole_number
from airflow_provider_localleads.exceptions import LocalLeadsConfigurationError

API_KEY_ENV_VAR = "LOCALLEADS_API_KEY"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2
MAX_MAX_RETRIES = 10
KNOWN_EXTRAS = ("timeout", "max_retries", "allow_insecure_http")
# Airflow < 2.3 style form fields were stored with this prefix; still accepted when reading.
_LEGACY_PREFIX = "extra__localleads__"


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """The API key is kept out of ``repr``."""

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES

    def redact(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text


def _error(conn_id: str, message: str) -> LocalLeadsConfigurationError:
    return LocalLeadsConfigurationError(f"Connection {conn_id!r} (type localleads): {message}")


def _is_unset(value: object) -> bool:
    # Forms submit empty optional fields as "" (or null): that means "use the default".
    return value is None or (isinstance(value, str) and not value.strip())


def _timeout(conn_id: str, value: object) -> float | None:
    if _is_unset(value):
        return None
    try:
        number = math.nan if isinstance(value, bool) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise _error(conn_id, f"extra 'timeout' must be a positive number of seconds, got {value!r}")
    return number


def _max_retries(conn_id: str, value: object) -> int | None:
    if _is_unset(value):
        return None
    number = whole_number(value)
    if isinstance(value, float) and value.is_integer():
        number = int(value)  # a JSON extra written by a form or a tool may hold 3.0
    if number is None or not 0 <= number <= MAX_MAX_RETRIES:
        raise _error(conn_id, f"extra 'max_retries' must be a whole number from 0 to {MAX_MAX_RETRIES}, got {value!r}")
    return number


def _flag(conn_id: str, name: str, value: object) -> bool:
    if _is_unset(value):
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "y"):
        # "y": what Airflow 2.11's Test button sends for a checked wtforms BooleanField.
        return value.strip().lower() in ("true", "y")
    raise _error(conn_id, f"extra {name!r} must be true or false, got {value!r}")


def is_loopback(hostname: str) -> bool:
    if hostname.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def _base_url(conn_id: str, host: str | None, schema: str | None, port: int | None, insecure_ok: bool) -> str:
    raw = (host or "").strip() or PRODUCTION_BASE_URL
    if "://" not in raw:
        scheme = schema.strip().lower() if schema and schema.strip().lower() in ("http", "https") else "https"
        raw = f"{scheme}://{raw}"
    try:
        parts = urlsplit(raw)
    except ValueError as err:
        raise _error(conn_id, f"host is not a valid URL ({err})") from None
    if "@" in parts.netloc:
        # Checked first, so that a key pasted into the URL is never quoted back in an error.
        raise _error(conn_id, "host must not contain credentials; put the API key in the password field")
    try:
        url_port = parts.port
    except ValueError as err:
        raise _error(conn_id, f"host {raw!r} is not a valid URL ({err})") from None
    if parts.scheme not in ("http", "https"):
        raise _error(conn_id, f"host must use https:// (or http:// for a local sandbox), got {parts.scheme}://")
    if not parts.hostname:
        raise _error(conn_id, f"host {raw!r} has no host name; use e.g. {PRODUCTION_BASE_URL}")
    if parts.query or parts.fragment:
        raise _error(conn_id, f"host must be a base URL without query or fragment, e.g. {PRODUCTION_BASE_URL}")
    netloc = parts.netloc
    if url_port is None and port:
        netloc = f"{netloc}:{port}"
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not insecure_ok:
        # The likely cause is a mistyped local host (the sandbox), so that comes first; the unsafe
        # switch comes last, as a deliberate choice.
        near = get_close_matches(parts.hostname, ["localhost"], n=1, cutoff=0.7)
        typo = " (did you mean localhost?)" if near else ""
        raise _error(
            conn_id,
            f"refusing to send the API key over plain http:// to {parts.hostname}, which is not this machine"
            f"{typo}. Check the host name first: the local sandbox is http://127.0.0.1:<port> or "
            "http://localhost:<port>, the LocalLeads API is https://. Only for a trusted private network, and "
            'deliberately, set the extra {"allow_insecure_http": true}',
        )
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def _check_key_characters(conn_id: str, api_key: str, source: str) -> None:
    """Keys are printable ASCII: a pasted curly quote or a look-alike Cyrillic letter would otherwise make
    requests or httpx raise a UnicodeEncodeError whose message and args hold the whole key."""
    for position, char in enumerate(api_key, start=1):
        if not "!" <= char <= "~":
            what = unicodedata.name(char, "a control character") if char.isprintable() else "a control character"
            raise _error(
                conn_id,
                f"the API key in {source} has a character that cannot be sent in an HTTP header: character "
                f"{position} of {len(api_key)} is U+{ord(char):04X} ({what}). API keys are plain ASCII; copy the "
                "key again from the LocalLeads dashboard (a word processor or chat may have replaced quotes or "
                "letters)",
            )


def settings_from_connection(
    conn: Any,
    *,
    extra: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
) -> ConnectionSettings:
    """Unknown extras are refused rather than ignored: a misspelt ``max_retries`` silently doing nothing is
    worse. ``extra``: the connection's extras when already read (asynchronously, in the triggerer).
    """
    conn_id = str(conn.conn_id)
    environ = os.environ if environ is None else environ
    try:
        extras: dict[str, Any] = dict((conn.extra_dejson if extra is None else extra) or {})
    except Exception as err:  # noqa: BLE001 - any failure here means the extra is not valid JSON
        raise _error(conn_id, f"extra is not a JSON object ({type(err).__name__})") from None
    normalised: dict[str, Any] = {}
    for key, value in extras.items():
        name = key.removeprefix(_LEGACY_PREFIX)
        if name not in KNOWN_EXTRAS:
            raise _error(
                conn_id, f"unknown extra {key!r}; the extras this connection understands are {', '.join(KNOWN_EXTRAS)}"
            )
        normalised[name] = value

    insecure_ok = _flag(conn_id, "allow_insecure_http", normalised.get("allow_insecure_http"))
    base_url = _base_url(conn_id, conn.host, conn.schema, conn.port, insecure_ok)

    api_key = (conn.password or "").strip()
    key_source = "the connection's password field"
    if not api_key:
        api_key, key_source = environ.get(API_KEY_ENV_VAR, "").strip(), f"the {API_KEY_ENV_VAR} environment variable"
    if not api_key and (conn.login or "").strip():
        # localleads://KEY@host (the colon missing) puts the key in the login field. Never quote it.
        raise _error(
            conn_id,
            "no API key in the password field, but the login field is set: that is probably the key in the "
            "wrong field (in the URI form the key goes after a colon: localleads://:<API key>@host). Move it "
            "to the password field; this connection type uses no login",
        )
    if not api_key:
        raise _error(
            conn_id,
            f"no API key: put it in the connection's password field or set the {API_KEY_ENV_VAR} "
            "environment variable on the workers and the triggerer",
        )
    _check_key_characters(conn_id, api_key, key_source)

    conn_timeout = _timeout(conn_id, normalised.get("timeout"))
    chosen_timeout = timeout if timeout is not None else conn_timeout
    if chosen_timeout is not None and not (math.isfinite(chosen_timeout) and chosen_timeout > 0):
        raise _error(conn_id, f"timeout must be a positive number of seconds, got {chosen_timeout!r}")
    conn_retries = _max_retries(conn_id, normalised.get("max_retries"))
    chosen_retries = max_retries if max_retries is not None else conn_retries
    number = python_whole_number(chosen_retries)
    if chosen_retries is not None and (number is None or not 0 <= number <= MAX_MAX_RETRIES):
        raise _error(conn_id, f"max_retries must be a whole number from 0 to {MAX_MAX_RETRIES}, got {chosen_retries!r}")

    return ConnectionSettings(
        conn_id=conn_id,
        base_url=base_url,
        api_key=api_key,
        connect_timeout=chosen_timeout if chosen_timeout is not None else DEFAULT_CONNECT_TIMEOUT,
        read_timeout=chosen_timeout if chosen_timeout is not None else DEFAULT_READ_TIMEOUT,
        max_retries=chosen_retries if chosen_retries is not None else DEFAULT_MAX_RETRIES,
    )
