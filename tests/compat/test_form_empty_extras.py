"""Optional fields left empty in a connection form are treated as unset (Airflow 3.3 and 2.11).

What each version's form really saves:

* Airflow 3.3 (React UI; recorded with the real UI and re-checked by the browser test): untouched,
  or typed-into-and-cleared, optional fields are saved as ``{"timeout": null, "max_retries": null,
  "allow_insecure_http": false}``.
* Airflow 2.11 (Flask-AppBuilder form, ``ConnectionModelView.process_form``): an empty wtforms
  ``IntegerField`` is saved as ``null``, an unchecked ``BooleanField`` as ``false``, an empty
  ``StringField`` (``timeout``: 2.11 refuses ``DecimalField`` and would drop the whole hook) is
  left out. Its *Test* button instead serialises the form in the browser (``connection_form.js``
  ``getSerializedFormData``): empty fields are left out, filled ones are sent as strings under both
  ``extra__localleads__<name>`` and ``<name>``, and a checked box as its HTML value ``"y"``.

The hook must work with all of these against the sandbox. On 2.11 the real Flask app is also built
in-process (anonymous users are Admin, CSRF off) and its add-connection form is posted.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from compat_support import (
    AIRFLOW_V3,
    CONN_TYPE,
    EXTRA_FIELDS,
    FORM_EXTRA_V3,
    PRODUCTION_BASE_URL,
    canary_key,
    connection_json,
)

from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.sandbox import SandboxServer

BUG_V2_CHECKBOX_Y = (
    "BUG: _settings.py _flag() rejects 'y', the value Airflow 2.11's Test button sends for a checked "
    "BooleanField (allow_insecure_http); fix: accept 'y' as true"
)

SAVED_EXTRAS = {
    # Airflow 3.3's form, exactly as it posts it (a JSON string, pretty-printed).
    "v3-form": FORM_EXTRA_V3,
    # Airflow 2.11's form: StringField timeout left out, IntegerField null, BooleanField false.
    "v2-form": {"max_retries": None, "allow_insecure_http": False},
    # A number field left empty (what an IntegerField timeout would save): null.
    "null-number-timeout": {"timeout": None, "max_retries": None, "allow_insecure_http": False},
    # Airflow 2.11's Test button with every optional field empty: nothing at all.
    "v2-test-button": {},
    # Empty strings (hand-edited Extra JSON, other tools) and explicit nulls everywhere.
    "empty-strings": {"timeout": "", "max_retries": "", "allow_insecure_http": False},
    "blank-strings": {"timeout": "  ", "max_retries": " ", "allow_insecure_http": ""},
    "all-null": {"timeout": None, "max_retries": None, "allow_insecure_http": None},
    # Pre-2.3 style prefixed names, still accepted.
    "legacy-prefixed": {
        "extra__localleads__timeout": "",
        "extra__localleads__max_retries": None,
        "extra__localleads__allow_insecure_http": False,
    },
}


def _use_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, host: str, password: str, extra: Any) -> None:
    conn = json.loads(connection_json(host, password))
    conn["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


@pytest.mark.parametrize("extra", list(SAVED_EXTRAS.values()), ids=list(SAVED_EXTRAS))
def test_empty_optional_fields_mean_defaults(
    extra: Any, canary_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = "localleads_form_saved"
    _use_connection(monkeypatch, conn_id, canary_sandbox.url, canary_sandbox.api_key, extra)
    with LocalLeadsHook(conn_id) as hook:
        settings = hook.settings
        assert (settings.connect_timeout, settings.read_timeout, settings.max_retries) == (5.0, 30.0, 2)
        assert hook.get_balance().available_credits == 82
        ok, message = hook.test_connection()
    assert ok is True, message
    assert message.startswith(f"Connected to {canary_sandbox.url}. Credits: 82 available")


@pytest.mark.skipif(AIRFLOW_V3, reason="the payload of Airflow 2.11's Test button (connection_form.js)")
def test_v2_test_button_payload_with_every_field_filled(
    canary_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = {
        "extra__localleads__timeout": "20",
        "timeout": "20",
        "extra__localleads__max_retries": "3",
        "max_retries": "3",
        "extra__localleads__allow_insecure_http": "y",
        "allow_insecure_http": "y",
    }
    conn_id = "localleads_v2_test_button"
    _use_connection(monkeypatch, conn_id, canary_sandbox.url, canary_sandbox.api_key, extra)
    with LocalLeadsHook(conn_id) as hook:
        ok, message = hook.test_connection()
        assert ok is True, message
        assert (hook.settings.read_timeout, hook.settings.max_retries) == (20.0, 3)


# ------------------------------------------------------------------------------------------------
# Airflow 2.11: the real Flask-AppBuilder connection form, in-process
# ------------------------------------------------------------------------------------------------

_V2_FIELDS = [f"extra__{CONN_TYPE}__{name}" for name in EXTRA_FIELDS]


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Airflow 2.11's webserver app (anonymous users are Admin, CSRF off) and its test client."""
    if AIRFLOW_V3:
        pytest.skip("Airflow 2.11's Flask connection form")
    config = Path(tmp_path_factory.mktemp("www")) / "webserver_config.py"
    config.write_text('AUTH_ROLE_PUBLIC = "Admin"\nWTF_CSRF_ENABLED = False\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__WEBSERVER__CONFIG_FILE", str(config))
        mp.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
        mp.setenv("AIRFLOW__API__AUTH_BACKENDS", "airflow.api.auth.backend.session")
        # The default "database" backend keeps a SQLite read transaction open between test-client
        # requests (Flask-Session), which locks out every later writer in this test session.
        mp.setenv("AIRFLOW__WEBSERVER__SESSION_BACKEND", "securecookie")
        from airflow.utils.db import initdb
        from airflow.www.app import create_app

        initdb()
        app = create_app(testing=True)
        yield app.test_client()


@pytest.fixture(scope="module")
def add_page(www: Any) -> str:
    response = www.get("/connection/add")
    assert response.status_code == 200
    return response.get_data(as_text=True)  # type: ignore[no-any-return]


def _inputs(page: str) -> dict[str, dict[str, str]]:
    found = {}
    for tag in re.findall(r"<input[^>]*>", page):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag))
        if attrs.get("name", "").startswith(f"extra__{CONN_TYPE}__"):
            found[attrs["name"]] = attrs
    return found


def _form_pairs(host: str, password: str, values: dict[str, str], checked: bool) -> list[tuple[str, str]]:
    """What the browser submits (jQuery ``serializeArray`` / a form post): an unchecked box is left out."""
    pairs = [
        ("conn_id", "localleads_v2_form"),
        ("conn_type", CONN_TYPE),
        ("description", ""),
        ("host", host),
        ("schema", ""),
        ("login", ""),
        ("password", password),
        ("port", ""),
        ("extra", ""),
        (f"extra__{CONN_TYPE}__timeout", values.get("timeout", "")),
        (f"extra__{CONN_TYPE}__max_retries", values.get("max_retries", "")),
    ]
    if checked:
        pairs.append((f"extra__{CONN_TYPE}__allow_insecure_http", "y"))
    return pairs


def _test_button_payload(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``connection_form.js`` ``getSerializedFormData``, transcribed."""
    out: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for name, value in pairs:
        if name == "conn_id":
            out["connection_id"] = value
        elif value != "" and name == "port":
            out[name] = int(value)
        elif value != "" and name != "csrf_token":
            if name == "extra":
                extras.update(json.loads(value))
            elif name.startswith("extra__"):
                extras[name] = value
                extras[re.sub(r"^extra__.+?__", "", name)] = value
            else:
                out[name] = value
    out["extra"] = json.dumps(extras)
    return out


def test_v2_form_offers_the_type_with_native_fields(add_page: str) -> None:
    assert f'<option value="{CONN_TYPE}">LocalLeads</option>' in add_page
    inputs = _inputs(add_page)
    assert sorted(inputs) == sorted(_V2_FIELDS)
    assert inputs[f"extra__{CONN_TYPE}__allow_insecure_http"]["type"] == "checkbox"
    behaviours_json = re.search(r'<script id="field_behaviours" type="text/json">(.*?)</script>', add_page, re.S)
    assert behaviours_json is not None
    ours = json.loads(html.unescape(behaviours_json.group(1)))[CONN_TYPE]
    assert sorted(ours["hidden_fields"]) == ["login", "port", "schema"]
    assert ours["relabeling"] == {"host": "Base URL", "password": "API key"}
    assert ours["placeholders"]["host"] == PRODUCTION_BASE_URL


def test_v2_form_saves_empty_optional_fields_as_unset(www: Any, canary_sandbox: SandboxServer) -> None:
    from airflow.models import Connection
    from airflow.utils.session import create_session

    pairs = _form_pairs(canary_sandbox.url, canary_sandbox.api_key, {}, checked=False)
    response = www.post("/connection/add", data=dict(pairs), follow_redirects=True)
    assert response.status_code == 200
    assert canary_sandbox.api_key not in response.get_data(as_text=True)
    try:
        with create_session() as session:
            saved = session.query(Connection).filter_by(conn_id="localleads_v2_form").one_or_none()
            assert saved is not None, "the form did not save the connection"
            extra = saved.extra_dejson
        assert set(extra) <= set(EXTRA_FIELDS)
        assert all(value in (None, "", False) for value in extra.values()), extra
        with LocalLeadsHook("localleads_v2_form") as hook:  # read back from the metadata database
            assert hook.settings.max_retries == 2
            assert hook.get_balance().available_credits == 82
    finally:
        with create_session() as session:
            session.query(Connection).filter_by(conn_id="localleads_v2_form").delete()


def test_v2_form_saves_filled_fields_with_their_types(www: Any, canary_sandbox: SandboxServer) -> None:
    from airflow.models import Connection
    from airflow.utils.session import create_session

    values = {"timeout": " 2.5 ", "max_retries": "3"}
    pairs = _form_pairs(canary_sandbox.url, canary_sandbox.api_key, values, checked=True)
    response = www.post("/connection/add", data=dict(pairs), follow_redirects=True)
    assert response.status_code == 200
    try:
        with create_session() as session:
            saved = session.query(Connection).filter_by(conn_id="localleads_v2_form").one_or_none()
            assert saved is not None, "the form did not save the connection"
            extra = saved.extra_dejson
        assert extra == {"timeout": "2.5", "max_retries": 3, "allow_insecure_http": True}
        with LocalLeadsHook("localleads_v2_form") as hook:
            assert (hook.settings.read_timeout, hook.settings.max_retries) == (2.5, 3)
            assert hook.get_balance().available_credits == 82
    finally:
        with create_session() as session:
            session.query(Connection).filter_by(conn_id="localleads_v2_form").delete()


@pytest.mark.parametrize("timeout", ["abc", "-1", "30s", "1e3"])
def test_v2_form_refuses_a_timeout_that_is_not_a_number_of_seconds(
    timeout: str, www: Any, canary_sandbox: SandboxServer
) -> None:
    from airflow.models import Connection
    from airflow.utils.session import create_session

    pairs = _form_pairs(canary_sandbox.url, canary_sandbox.api_key, {"timeout": timeout}, checked=False)
    response = www.post("/connection/add", data=dict(pairs), follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "Enter a number of seconds, e.g. 30" in page
    assert canary_sandbox.api_key not in page
    with create_session() as session:
        assert session.query(Connection).filter_by(conn_id="localleads_v2_form").count() == 0


def test_v2_test_button_with_empty_optional_fields(www: Any, canary_sandbox: SandboxServer) -> None:
    payload = _test_button_payload(_form_pairs(canary_sandbox.url, canary_sandbox.api_key, {}, checked=False))
    response = www.post("/api/v1/connections/test", json=payload)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["status"] is True, answer
    assert answer["message"].startswith(f"Connected to {canary_sandbox.url}. Credits: 82 available")
    assert canary_sandbox.api_key not in response.get_data(as_text=True)


def test_v2_test_button_with_a_wrong_key(www: Any, canary_sandbox: SandboxServer) -> None:
    wrong = canary_key()
    payload = _test_button_payload(_form_pairs(canary_sandbox.url, wrong, {}, checked=False))
    response = www.post("/api/v1/connections/test", json=payload)
    answer = response.get_json()
    assert answer["status"] is False, answer
    assert "401" in answer["message"]
    assert "API key" in answer["message"]
    assert wrong not in response.get_data(as_text=True)
