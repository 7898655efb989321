"""The credits page on Airflow 2.11: a Flask AppBuilder view at ``/localleads`` under Browse.

Same page and JSON as on Airflow 3 (same data, same HTML), behind the 2.11 webserver's own login and
auth manager: not logged in -> the login page; logged in -> read access to the connection
(``is_authorized_connection``, the question Airflow's connection views ask) or 403. Imported only by
the 2.11 webserver (see ``plugin.LocalLeadsCreditsPlugin.appbuilder_views``).

FAB's own permission bookkeeping is pointed at Airflow's Connections resource
(``class_permission_name``), so the view adds no permission of its own to any role.
"""

from __future__ import annotations

import json
from typing import Any

from airflow.auth.managers.models.resource_details import ConnectionDetails
from airflow.security import permissions
from airflow.utils.session import create_session
from airflow.www.auth import has_access_view
from airflow.www.extensions.init_auth_manager import get_auth_manager
from flask import Response, request  # type: ignore[import-not-found,unused-ignore]  # 2.11 only
from flask_appbuilder import BaseView, expose
from sqlalchemy import select

from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.ui.data import CreditsData
from airflow_provider_localleads.ui.errors import describe_error, error_status
from airflow_provider_localleads.ui.render import render_page

__all__ = ["CreditsView", "can_read", "readable_connections"]

MAX_CONN_ID_LENGTH = 250  # Airflow's connection.conn_id column


def can_read(conn_id: str) -> bool:
    """Whether the logged-in user may read connection ``conn_id``."""
    details = ConnectionDetails(conn_id=conn_id)
    return bool(get_auth_manager().is_authorized_connection(method="GET", details=details))


def readable_connections() -> list[str]:
    """The stored connections of type localleads the logged-in user may read, sorted."""
    from airflow.models import Connection

    query = select(Connection.conn_id).where(Connection.conn_type == LocalLeadsHook.conn_type)
    with create_session() as session:
        ids = session.scalars(query.order_by(Connection.conn_id)).all()
    return [conn_id for conn_id in ids if can_read(conn_id)]


def _html(page: str, status: int = 200) -> Response:
    return Response(page, status=status, mimetype="text/html")


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


class CreditsView(BaseView):  # type: ignore[misc]
    """``/localleads/`` (the page, ``?conn_id=``) and ``/localleads/api/connections/<id>/credits`` (JSON)."""

    route_base = "/localleads"
    default_view = "page"
    class_permission_name = permissions.RESOURCE_CONNECTION
    method_permission_name = {"page": "read", "credits": "read"}

    def __init__(self, data: CreditsData | None = None) -> None:
        super().__init__()
        self.data = data or CreditsData()

    @expose("/")  # type: ignore[untyped-decorator,unused-ignore]
    @has_access_view()  # type: ignore[untyped-decorator,unused-ignore]
    def page(self) -> Response:
        conn_id = request.args.get("conn_id", LocalLeadsHook.default_conn_name)
        if not 1 <= len(conn_id) <= MAX_CONN_ID_LENGTH:
            message = f"conn_id must be 1 to {MAX_CONN_ID_LENGTH} characters long"
            return _html(render_page(conn_id=conn_id[:MAX_CONN_ID_LENGTH], connections=[], error=message), 400)
        if not can_read(conn_id):
            message = f"You may not read connection {conn_id!r}; ask an admin for read access to it."
            return _html(render_page(conn_id=conn_id, connections=readable_connections(), error=message), 403)
        connections = readable_connections()
        try:
            return _html(render_page(conn_id=conn_id, connections=connections, data=self.data.credits(conn_id)))
        except Exception as err:  # noqa: BLE001 - the page shows a message, never a traceback
            return _html(render_page(conn_id=conn_id, connections=connections, error=describe_error(err, conn_id)))

    @expose("/api/connections/<string:connection_id>/credits")  # type: ignore[untyped-decorator,unused-ignore]
    @has_access_view()  # type: ignore[untyped-decorator,unused-ignore]
    def credits(self, connection_id: str) -> Response:
        if not can_read(connection_id):
            return _json({"detail": f"You may not read connection {connection_id!r}"}, 403)
        try:
            return _json(self.data.credits(connection_id))
        except Exception as err:  # noqa: BLE001 - a message naming the fix, never a traceback
            return _json({"detail": describe_error(err, connection_id)}, error_status(err))
