"""The Airflow plugin that adds the "LocalLeads credits" page, loaded by every Airflow process.

Airflow imports this module in its scheduler, workers, triggerer and DAG processor too (the
``airflow.plugins`` entry point), and only the api-server serves the page. So it imports no web
framework: ``fastapi_apps`` holds :class:`LazyApp`, a plain ASGI callable that imports and builds the
FastAPI app (:mod:`.app`) on its first request, and only the api-server ever sends it one. Airflow
mounts any ASGI app (``app.mount``), so nothing private is relied on.

Per line: 3.1+ mounts the app and shows the ``external_views`` entry under Browse, opening the page
inside the UI; 3.0 mounts the app (reachable at ``/localleads/``; it knows no external views and
ignores them); 2.11 knows neither, and shows ``appbuilder_views`` (a Flask AppBuilder view) under
Browse. Both view lists are built when first read (:class:`OnFirstRead`), which only the UI server
(and ``airflow plugins``) do, so no other process imports Flask AppBuilder or reads configuration for
them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.providers.common.compat.sdk import AirflowPlugin, conf

__all__ = ["URL_PREFIX", "LazyApp", "LocalLeadsCreditsPlugin", "OnFirstRead"]

URL_PREFIX = "/localleads"
PAGE_NAME = "LocalLeads credits"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class LazyApp:
    """An ASGI app that builds the real one (``airflow_provider_localleads.ui.app.create_app``) when first called."""

    def __init__(self) -> None:
        self._app: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            # No lock: requests arrive on one event loop and nothing is awaited before the assignment.
            from airflow_provider_localleads.ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


def page_href() -> str:
    """The page's URL path under the api-server's ``[api] base_url`` (which may hold a path)."""
    from urllib.parse import urlsplit

    base = urlsplit(conf.get("api", "base_url", fallback="/") or "/").path.rstrip("/")
    return f"{base}{URL_PREFIX}/"


def build_external_views() -> list[dict[str, Any]]:
    """The Browse entry of Airflow 3.1+, opening the page inside the UI (``url_route``)."""
    view = {"name": PAGE_NAME, "href": page_href(), "destination": "nav", "category": "browse"}
    return [{**view, "url_route": "localleads_credits"}]


def build_appbuilder_views() -> list[dict[str, Any]]:
    """The Airflow 2.11 webserver's view under Browse; none on Airflow 3 (the FastAPI app serves the page)."""
    from airflow_provider_localleads._compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        return []
    from airflow_provider_localleads.ui.fab_view import CreditsView

    return [{"name": PAGE_NAME, "category": "Browse", "view": CreditsView()}]


class OnFirstRead:
    """A plugin attribute built when Airflow first reads it, then kept.

    A descriptor, because Airflow reads plugin attributes from the plugin class or an instance of it.
    Only the UI server reads the views (and ``airflow plugins``), so no other process pays for them:
    no configuration read, no Flask AppBuilder import.
    """

    def __init__(self, build: Callable[[], list[dict[str, Any]]]) -> None:
        self._build = build
        self._value: list[dict[str, Any]] | None = None

    def __get__(self, obj: object, objtype: type | None = None) -> list[dict[str, Any]]:
        if self._value is None:
            self._value = self._build()
        return self._value


class LocalLeadsCreditsPlugin(AirflowPlugin):
    """The credits page: on Airflow 3 a FastAPI app at ``/localleads`` and, on 3.1+, a Browse entry showing
    it in the UI; on 2.11 an AppBuilder view under Browse."""

    name = "localleads_credits"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": PAGE_NAME}]
    external_views = OnFirstRead(build_external_views)
    appbuilder_views = OnFirstRead(build_appbuilder_views)
