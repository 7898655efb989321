"""The Airflow plugin that adds the "LocalLeads credits" page, loaded by every Airflow process.

Airflow imports this module in its scheduler, workers, triggerer and DAG processor too (the
``airflow.plugins`` entry point), and only the api-server serves the page. So it imports no web
framework: ``fastapi_apps`` holds :class:`LazyApp`, a plain ASGI callable that imports and builds the
FastAPI app (:mod:`.app`) on its first request, and only the api-server ever sends it one. Airflow
mounts any ASGI app (``app.mount``), so nothing private is relied on.

Per line: 3.1+ mounts the app and shows the ``external_views`` entry under Browse, opening the page
inside the UI; 3.0 mounts the app (reachable at ``/localleads/``; it knows no external views and
ignores them); 2.11 knows neither, and shows ``appbuilder_views`` (a Flask AppBuilder view) under
Browse. That view is built when the attribute is first read, which only the 2.11 webserver (and
``airflow plugins``) do, so no other process imports Flask AppBuilder for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.providers.common.compat.sdk import AirflowPlugin, conf

__all__ = ["URL_PREFIX", "AppBuilderViews", "LazyApp", "LocalLeadsCreditsPlugin"]

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


class AppBuilderViews:
    """``appbuilder_views`` built on first read: on Airflow 2.11 the credits view, on Airflow 3 none.

    A descriptor, because Airflow reads the attribute from the plugin class or an instance of it.
    """

    def __init__(self) -> None:
        self._views: list[dict[str, Any]] | None = None

    def __get__(self, obj: object, objtype: type | None = None) -> list[dict[str, Any]]:
        if self._views is None:
            from airflow_provider_localleads._compat import AIRFLOW_V_3_0_PLUS

            if AIRFLOW_V_3_0_PLUS:
                self._views = []  # the FastAPI app above serves the page
            else:
                from airflow_provider_localleads.ui.fab_view import CreditsView

                self._views = [{"name": PAGE_NAME, "category": "Browse", "view": CreditsView()}]
        return self._views


class LocalLeadsCreditsPlugin(AirflowPlugin):
    """The credits page: a FastAPI app at ``/localleads`` and, on 3.1+, a Browse entry showing it in the UI."""

    name = "localleads_credits"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": PAGE_NAME}]
    external_views = [
        {
            "name": PAGE_NAME,
            "href": page_href(),
            "destination": "nav",
            "category": "browse",
            "url_route": "localleads_credits",
        }
    ]
    appbuilder_views = AppBuilderViews()
