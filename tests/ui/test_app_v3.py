"""The credits page and its JSON on Airflow 3, behind Airflow's real auth manager.

Users (SimpleAuthManager, passwords from a file, tokens from ``POST /auth/token`` as Airflow's own
login gives them): ``operator`` (role op: may read connections), ``viewer`` (role viewer: may not),
``admin``; and anonymous. ``PerConnectionAuthManager`` narrows one rule so a decision per connection
can be seen (``restricted_*`` only for admin).

Routes are tested on :func:`create_app` with a test clock (fresh caches per test), and once through
Airflow's own app, where the plugin mounts it at ``/localleads``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from packaging.version import Version
from ui_support import CONN, AddTxn, Clock

from airflow_provider_localleads.sandbox import BALANCE_PATH, SandboxServer

AIRFLOW = pytest.importorskip("airflow").__version__
pytestmark = pytest.mark.skipif(
    Version(AIRFLOW).major < 3, reason="the FastAPI plugin app is for Airflow 3 (2.11 has the AppBuilder view)"
)
COOKIE_AUTH = Version(Version(AIRFLOW).base_version) >= Version("3.1")

USERS = {"operator": "op", "viewer": "viewer", "admin": "admin"}
JSON_ROUTE = "/api/connections/{}/credits"


@pytest.fixture(scope="module")
def airflow_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    """Airflow's own API app (auth manager, plugins) and a token per user."""
    passwords = tmp_path_factory.mktemp("auth") / "passwords.json"
    passwords.write_text(json.dumps({name: f"{name}-password" for name in USERS}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__CORE__AUTH_MANAGER", "ui_auth_manager.PerConnectionAuthManager")
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", ",".join(f"{u}:{r}" for u, r in USERS.items()))
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
        # What every api-server process runs with (3.3: airflow/api_fastapi/main.py sets it): connections
        # are then read from the metadata database too, not only from the environment.
        mp.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
        from airflow.api_fastapi.app import create_app
        from airflow.utils.db import initdb
        from fastapi.testclient import TestClient

        initdb()
        with TestClient(create_app("core")) as client:
            tokens = {}
            for user in USERS:
                answer = client.post("/auth/token", json={"username": user, "password": f"{user}-password"})
                assert answer.status_code == 201, answer.text
                tokens[user] = answer.json()["access_token"]
            yield client, tokens


@pytest.fixture
def tokens(airflow_api: tuple[Any, dict[str, str]]) -> dict[str, str]:
    return airflow_api[1]


@pytest.fixture
def page_client(airflow_api: tuple[Any, dict[str, str]]) -> Iterator[Any]:
    """A client of the plugin's app with its own caches and the test clock."""
    from fastapi.testclient import TestClient

    from airflow_provider_localleads.ui.app import create_app
    from airflow_provider_localleads.ui.data import CreditsData

    with TestClient(create_app(CreditsData(clock=Clock()))) as client:
        yield client


@pytest.fixture
def stored_connections(sandbox: SandboxServer) -> Iterator[list[str]]:
    """Connections in Airflow's database: two of type localleads (one restricted), one of another type."""
    from airflow.models import Connection
    from airflow.utils.session import create_session

    ids = {"ll_team_a": "localleads", "restricted_finance": "localleads", "some_http": "http"}
    with create_session() as session:
        for conn_id, conn_type in ids.items():
            session.add(Connection(conn_id=conn_id, conn_type=conn_type, host=sandbox.url, password=sandbox.api_key))
    yield list(ids)
    with create_session() as session:
        for conn in session.query(Connection).filter(Connection.conn_id.in_(list(ids))):
            session.delete(conn)


def as_user(tokens: dict[str, str], user: str | None) -> dict[str, str]:
    if user is None:
        return {}
    if user == "forged":
        return {"Authorization": "Bearer not-a-jwt"}
    return {"Authorization": f"Bearer {tokens[user]}"}


# --------------------------------------------------------------------------------------------- access


ROUTES = [f"/?conn_id={CONN}", "/", JSON_ROUTE.format(CONN)]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("user", "status"), [("operator", 200), ("viewer", 403), (None, 401), ("forged", 403)])
def test_access_matrix(
    page_client: Any, tokens: dict[str, str], sandbox: SandboxServer, route: str, user: str | None, status: int
) -> None:
    answer = page_client.get(route, headers=as_user(tokens, user))

    assert answer.status_code == status, answer.text
    if status != 200:
        assert "= 82</td>" not in answer.text
        assert "available_credits" not in answer.text
        assert sandbox.request_count() == 0  # no data was read for a refused request
    assert sandbox.api_key not in answer.text


def test_read_access_is_decided_per_connection(
    page_client: Any, tokens: dict[str, str], stored_connections: list[str]
) -> None:
    operator, admin = as_user(tokens, "operator"), as_user(tokens, "admin")

    assert page_client.get("/?conn_id=restricted_finance", headers=operator).status_code == 403
    assert page_client.get(JSON_ROUTE.format("restricted_finance"), headers=operator).status_code == 403
    assert page_client.get("/?conn_id=restricted_finance", headers=admin).status_code == 200
    assert page_client.get(JSON_ROUTE.format("restricted_finance"), headers=admin).status_code == 200


def test_the_picker_lists_only_localleads_connections_the_user_may_read(
    page_client: Any, tokens: dict[str, str], stored_connections: list[str]
) -> None:
    as_operator = page_client.get("/?conn_id=ll_team_a", headers=as_user(tokens, "operator")).text
    as_admin = page_client.get("/?conn_id=ll_team_a", headers=as_user(tokens, "admin")).text

    assert '<option value="ll_team_a" selected>' in as_operator
    assert "restricted_finance" not in as_operator
    assert "some_http" not in as_operator
    assert '<option value="restricted_finance">' in as_admin
    assert "some_http" not in as_admin


@pytest.mark.skipif(not COOKIE_AUTH, reason="Airflow 3.0 reads the token from the Authorization header only")
def test_the_ui_session_cookie_is_enough(page_client: Any, tokens: dict[str, str], sandbox: SandboxServer) -> None:
    """Inside the UI (an iframe) the browser sends Airflow's ``_token`` cookie, not a header (3.1+)."""
    page_client.cookies.set("_token", tokens["operator"])
    try:
        assert page_client.get("/").status_code == 200
        page_client.cookies.set("_token", tokens["viewer"])
        assert page_client.get("/").status_code == 403
    finally:
        page_client.cookies.clear()


# ------------------------------------------------------------------------------------------ the routes


def test_the_json_route_serves_the_data(
    page_client: Any, tokens: dict[str, str], sandbox: SandboxServer, add: AddTxn
) -> None:
    add(amount=-5, description="Lead search: x", days_ago=1)
    answer = page_client.get(JSON_ROUTE.format(CONN), headers=as_user(tokens, "operator"))

    assert answer.status_code == 200
    data = answer.json()
    assert sorted(data) == ["balance", "by_kind", "conn_id", "daily", "fetched_at", "transactions", "usage"]
    assert data["balance"]["available_credits"] == 82
    assert data["by_kind"] == {"Lead search": 5}


def test_the_page_shows_the_credits(page_client: Any, tokens: dict[str, str], sandbox: SandboxServer) -> None:
    answer = page_client.get("/", headers=as_user(tokens, "operator"))

    assert answer.headers["content-type"].startswith("text/html")
    assert "= 82</td>" in answer.text
    assert answer.text.count("<svg") == 2  # no spending yet: no by-kind chart


def test_page_loads_within_a_minute_read_the_balance_once(
    page_client: Any, tokens: dict[str, str], sandbox: SandboxServer
) -> None:
    for _ in range(5):
        assert page_client.get("/", headers=as_user(tokens, "operator")).status_code == 200
        assert page_client.get(JSON_ROUTE.format(CONN), headers=as_user(tokens, "operator")).status_code == 200

    assert sandbox.request_count(BALANCE_PATH) == 1


@pytest.mark.parametrize("route", ["/?conn_id=localleads_nope", JSON_ROUTE.format("localleads_nope")])
def test_an_unknown_connection_is_a_message(page_client: Any, tokens: dict[str, str], route: str) -> None:
    answer = page_client.get(route, headers=as_user(tokens, "operator"))

    assert answer.status_code == (200 if route.startswith("/?") else 404)
    assert "There is no connection &#x27;localleads_nope&#x27;" in answer.text or (
        answer.json()["detail"].startswith("There is no connection 'localleads_nope'")
    )
    assert "Traceback" not in answer.text


@pytest.mark.parametrize("route", ["/", JSON_ROUTE.format(CONN)])
def test_a_wrong_key_is_a_message_without_the_key(
    page_client: Any, tokens: dict[str, str], sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    wrong = "sk_wrong_key_4242"
    monkeypatch.setenv("AIRFLOW_CONN_LOCALLEADS_DEFAULT", sandbox.connection_json().replace(sandbox.api_key, wrong))
    answer = page_client.get(route, headers=as_user(tokens, "operator"))

    assert answer.status_code == (200 if route == "/" else 502)
    assert "401" in answer.text
    assert wrong not in answer.text
    assert "Traceback" not in answer.text


def test_the_api_being_down_is_a_message(
    page_client: Any, tokens: dict[str, str], sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LOCALLEADS_DEFAULT", sandbox.connection_json(extra={"max_retries": 0}))
    sandbox.stop()
    answer = page_client.get("/", headers=as_user(tokens, "operator"))

    assert answer.status_code == 200
    assert 'class="error" role="alert"' in answer.text
    assert "Traceback" not in answer.text


def test_a_conn_id_that_cannot_exist_is_refused(page_client: Any, tokens: dict[str, str]) -> None:
    answer = page_client.get("/?conn_id=" + "x" * 251, headers=as_user(tokens, "operator"))
    assert answer.status_code == 422


def test_no_openapi_page_is_served(page_client: Any) -> None:
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert page_client.get(path).status_code == 404


# ------------------------------------------------------------------------------------- inside Airflow


def test_airflow_mounts_the_plugin_at_localleads(
    airflow_api: tuple[Any, dict[str, str]], sandbox: SandboxServer
) -> None:
    client, tokens = airflow_api

    assert client.get("/localleads/").status_code == 401
    assert client.get("/localleads/", headers=as_user(tokens, "viewer")).status_code == 403
    answer = client.get("/localleads/", headers=as_user(tokens, "operator"))
    assert answer.status_code == 200, answer.text
    assert "= 82</td>" in answer.text
    assert client.get("/localleads" + JSON_ROUTE.format(CONN), headers=as_user(tokens, "operator")).status_code == 200


def test_airflow_loads_the_plugin_once_with_its_nav_entry(airflow_api: tuple[Any, dict[str, str]]) -> None:
    from airflow import plugins_manager

    (ours,) = [p for p in plugins_manager.get_plugin_info() if p["name"] == "localleads_credits"]
    assert [app["url_prefix"] for app in ours["fastapi_apps"]] == ["/localleads"]
    # get_import_errors() from 3.2; the module's dict before.
    errors = plugins_manager.get_import_errors() if hasattr(plugins_manager, "get_import_errors") else {}
    errors = errors or getattr(plugins_manager, "import_errors", None) or {}
    assert not [error for source, error in errors.items() if "localleads" in source]
    if COOKIE_AUTH:  # 3.1+: the Browse entry that opens the page inside the UI
        assert ours["external_views"] == [
            {
                "name": "LocalLeads credits",
                "href": "/localleads/",
                "destination": "nav",
                "category": "browse",
                "url_route": "localleads_credits",
            }
        ]


def test_a_connection_of_another_type_sends_nothing(
    page_client: Any, tokens: dict[str, str], sandbox: SandboxServer, stored_connections: list[str]
) -> None:
    """some_http points at the sandbox with its key as password: the page must not send it anywhere."""
    answer = page_client.get("/?conn_id=some_http", headers=as_user(tokens, "operator"))

    assert answer.status_code == 200
    assert "is of type &#x27;http&#x27;, not &#x27;localleads&#x27;" in answer.text
    assert sandbox.request_count() == 0


def test_no_access_is_a_page_inside_the_ui_not_raw_json(page_client: Any, tokens: dict[str, str]) -> None:
    answer = page_client.get("/?conn_id=restricted_x", headers=as_user(tokens, "operator"))

    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("text/html")
    assert "You may not read connection &#x27;restricted_x&#x27;; ask an admin for read access to it." in answer.text


def test_the_key_is_in_no_log_line(
    page_client: Any,
    tokens: dict[str, str],
    sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = as_user(tokens, "operator")
    sandbox.fail_next(status=503)  # a retry, logged by the hook
    assert page_client.get("/", headers=headers).status_code == 200
    assert page_client.get(JSON_ROUTE.format(CONN), headers=headers).status_code == 200
    wrong = "sk_wrong_key_in_logs_77"
    monkeypatch.setenv("AIRFLOW_CONN_LOCALLEADS_OTHER", sandbox.connection_json().replace(sandbox.api_key, wrong))
    assert page_client.get("/?conn_id=localleads_other", headers=headers).status_code == 200

    assert "503" in caplog.text  # the retry was logged, and no line holds a key
    assert sandbox.api_key not in caplog.text
    assert wrong not in caplog.text
