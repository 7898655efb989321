"""The credits page on Airflow 2.11: the AppBuilder view in the real webserver app, behind its login.

Users (FAB, the 2.11 default auth manager): ``operator`` (role Op: may read connections), ``viewer``
(role Viewer: may not), ``admin``; and anonymous (sent to the login page). The view is the one the
plugin gives the webserver; its caches are cleared before each test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from packaging.version import Version
from ui_support import CONN

from airflow_provider_localleads.sandbox import BALANCE_PATH, SandboxServer

AIRFLOW = pytest.importorskip("airflow").__version__
pytestmark = pytest.mark.skipif(
    Version(AIRFLOW).major >= 3, reason="the AppBuilder view is Airflow 2.11's (Airflow 3 has the FastAPI app)"
)
USERS = {"operator": "Op", "viewer": "Viewer", "admin": "Admin"}
JSON_ROUTE = "/localleads/api/connections/{}/credits"


@pytest.fixture(scope="module")
def webserver() -> Iterator[Any]:
    from airflow.utils.db import initdb
    from airflow.www.app import create_app

    initdb()
    with pytest.MonkeyPatch.context() as mp:
        # Sessions in a signed cookie, not in the database: on SQLite, flask-session's own engine waited for
        # Airflow's on every second login in one process ("database is locked"). PostgreSQL has no such wait.
        mp.setenv("AIRFLOW__WEBSERVER__SESSION_BACKEND", "securecookie")
        app = create_app(testing=True, config={"WTF_CSRF_ENABLED": False})
        security = app.appbuilder.sm
        for name, role in USERS.items():
            if not security.find_user(username=name):
                security.add_user(name, name, name, f"{name}@example.com", security.find_role(role), f"{name}-password")
        yield app


@pytest.fixture(autouse=True)
def _fresh_caches(webserver: Any) -> None:
    from airflow_provider_localleads.ui.plugin import LocalLeadsCreditsPlugin

    for view in LocalLeadsCreditsPlugin.appbuilder_views:
        view["view"].data.clear()


@pytest.fixture(scope="module")
def login(webserver: Any) -> Any:
    """``login(user)``: a test client with that user's session (``None``: not logged in), one per user
    (the login form is rate limited)."""
    clients: dict[str | None, Any] = {}

    def client_for(user: str | None) -> Any:
        if user not in clients:
            client = webserver.test_client()
            if user is not None:
                answer = client.post("/login/", data={"username": user, "password": f"{user}-password"})
                assert answer.status_code == 302, answer.text
            clients[user] = client
        return clients[user]

    return client_for


ROUTES = ["/localleads/", f"/localleads/?conn_id={CONN}", JSON_ROUTE.format(CONN)]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("user", "status"), [("operator", 200), ("viewer", 403), (None, 302)])
def test_access_matrix(login: Any, sandbox: SandboxServer, route: str, user: str | None, status: int) -> None:
    answer = login(user).get(route)

    assert answer.status_code == status, answer.text
    if user is None:
        assert "/login/" in answer.headers["Location"]
    if status != 200:
        assert "= 82</td>" not in answer.text
        assert sandbox.request_count() == 0
    assert sandbox.api_key not in answer.text


def test_the_page_and_json_show_the_credits(login: Any, sandbox: SandboxServer) -> None:
    client = login("operator")
    page = client.get("/localleads/")
    data = client.get(JSON_ROUTE.format(CONN)).get_json()

    assert page.mimetype == "text/html"
    assert "= 82</td>" in page.text
    assert "<script" not in page.text
    assert data["balance"]["available_credits"] == 82
    assert sorted(data) == ["balance", "by_kind", "conn_id", "daily", "fetched_at", "transactions", "usage"]


def test_page_loads_within_a_minute_read_the_balance_once(login: Any, sandbox: SandboxServer) -> None:
    client = login("operator")
    for _ in range(5):
        assert client.get("/localleads/").status_code == 200
    assert sandbox.request_count(BALANCE_PATH) == 1


def test_errors_are_messages(login: Any, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    client = login("operator")
    unknown = client.get("/localleads/?conn_id=localleads_nope")
    missing_json = client.get(JSON_ROUTE.format("localleads_nope"))
    wrong = "sk_wrong_key_4242"
    monkeypatch.setenv("AIRFLOW_CONN_LOCALLEADS_DEFAULT", sandbox.connection_json().replace(sandbox.api_key, wrong))
    refused = client.get("/localleads/")

    assert unknown.status_code == 200
    assert "There is no connection &#x27;localleads_nope&#x27;" in unknown.text
    assert missing_json.status_code == 404
    assert missing_json.get_json()["detail"].startswith("There is no connection 'localleads_nope'")
    assert "401" in refused.text
    assert wrong not in refused.text
    assert "Traceback" not in unknown.text + refused.text


def test_the_picker_lists_only_localleads_connections(login: Any, sandbox: SandboxServer) -> None:
    from airflow.models import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        session.add(Connection(conn_id="ll_team_b", conn_type="localleads", host=sandbox.url))
        session.add(Connection(conn_id="other_http", conn_type="http", host=sandbox.url))
    try:
        page = login("operator").get("/localleads/").text
    finally:
        with create_session() as session:
            for conn in session.query(Connection).filter(Connection.conn_id.in_(["ll_team_b", "other_http"])):
                session.delete(conn)

    assert '<option value="ll_team_b">' in page
    assert "other_http" not in page


def test_the_browse_menu_has_the_entry_for_admin(login: Any) -> None:
    home = login("admin").get("/home")

    assert home.status_code == 200
    assert 'href="/localleads/"' in home.text
    assert "LocalLeads credits" in home.text
