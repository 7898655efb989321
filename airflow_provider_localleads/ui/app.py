"""The FastAPI app behind ``/localleads`` on the Airflow 3 api-server: the page and its JSON.

Imported only when the api-server sends the first request (see :class:`.plugin.LazyApp`). Plugin
apps get no authentication from Airflow, so every route states its own: Airflow's user dependency
(401 without a token or session cookie) and read access to the connection (403). No OpenAPI page is
served: it would be the one unauthenticated route.

Routes are plain functions: the hook blocks on HTTP, so FastAPI runs them in its thread pool.
"""

from __future__ import annotations

from typing import Annotated, Any

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_connection
from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse

from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.ui.access import MAX_CONN_ID_LENGTH, can_read, readable_connections
from airflow_provider_localleads.ui.data import CreditsData
from airflow_provider_localleads.ui.errors import describe_error, error_status
from airflow_provider_localleads.ui.render import TITLE, render_page

__all__ = ["create_app"]

#: The page's ``?conn_id=`` (an id longer than Airflow's column cannot exist: 422 before any look-up).
ConnIdQuery = Annotated[
    str, Query(min_length=1, max_length=MAX_CONN_ID_LENGTH, description="The connection whose credits to show.")
]


def create_app(data: CreditsData | None = None) -> FastAPI:
    """The app; ``data`` holds the per-connection caches (one per app, so one per api-server process)."""
    credits = data or CreditsData()
    app = FastAPI(title=TITLE, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def page(
        user: GetUserDep, session: SessionDep, conn_id: ConnIdQuery = LocalLeadsHook.default_conn_name
    ) -> HTMLResponse:
        connections = readable_connections(user, session)
        if not can_read(user, conn_id):
            message = f"You may not read connection {conn_id!r}; ask an admin for read access to it."
            return HTMLResponse(render_page(conn_id=conn_id, connections=connections, error=message), 403)
        try:
            return HTMLResponse(render_page(conn_id=conn_id, connections=connections, data=credits.credits(conn_id)))
        except Exception as err:  # noqa: BLE001 - the page shows a message, never a traceback
            error = describe_error(err, conn_id)
            return HTMLResponse(render_page(conn_id=conn_id, connections=connections, error=error))

    @app.get(
        "/api/connections/{connection_id}/credits", dependencies=[Depends(requires_access_connection(method="GET"))]
    )
    def credits_json(connection_id: str) -> Any:
        try:
            return credits.credits(connection_id)
        except Exception as err:  # noqa: BLE001 - a message naming the fix, never a traceback
            return JSONResponse({"detail": describe_error(err, connection_id)}, status_code=error_status(err))

    return app
