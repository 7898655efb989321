"""Who may see which connection's credits: Airflow's auth manager decides, as for Airflow's own pages.

Reading a connection's credits needs read access to that connection (``GET`` on it). The JSON route
takes the id from its path and uses Airflow's ``requires_access_connection`` as it is; the page takes
it from ``?conn_id=``, which that dependency does not read, so :func:`can_read` asks the auth manager
the same question (``is_authorized_connection``) for the query's id.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails
from airflow.providers.common.compat.sdk import conf
from sqlalchemy import select

from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

__all__ = ["MAX_CONN_ID_LENGTH", "can_read", "readable_connections"]

MAX_CONN_ID_LENGTH = 250  # Airflow's connection.conn_id column


def _details(conn_id: str) -> ConnectionDetails:
    # Teams exist from 3.1 with [core] multi_team; a connection's team takes part in the decision there.
    if conf.getboolean("core", "multi_team", fallback=False):
        from airflow.models import Connection

        return ConnectionDetails(conn_id=conn_id, team_name=Connection.get_team_name(conn_id))
    return ConnectionDetails(conn_id=conn_id)


def can_read(user: Any, conn_id: str) -> bool:
    """Whether ``user`` may read connection ``conn_id`` (and so see its credits)."""
    return bool(get_auth_manager().is_authorized_connection(method="GET", details=_details(conn_id), user=user))


def readable_connections(user: Any, session: Any) -> list[str]:
    """The ids of the stored connections of type localleads that ``user`` may read, sorted.

    Connections from environment variables or a secrets backend cannot be listed (Airflow lists only
    its database); they are still shown when named in ``?conn_id=``.
    """
    from airflow.models import Connection

    ids = session.scalars(
        select(Connection.conn_id).where(Connection.conn_type == LocalLeadsHook.conn_type).order_by(Connection.conn_id)
    ).all()
    return [conn_id for conn_id in ids if can_read(user, conn_id)]
