"""The few places where Airflow 2.11 and 3.x differ, kept in one module.

Everything else imports Airflow names from ``airflow.providers.common.compat.sdk``, which resolves
them on both lines. What is left here differs in behaviour, not only in import path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from packaging.version import Version

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection


def airflow_version() -> Version:
    from airflow import __version__

    return Version(Version(__version__).base_version)


AIRFLOW_V_3_0_PLUS = airflow_version() >= Version("3.0.0")


async def aget_connection(conn_id: str) -> Connection:
    """Look a connection up without blocking the event loop.

    On Airflow 3 a synchronous look-up inside the triggerer's event loop fails ("You cannot use
    AsyncToSync in the same thread as an async event loop"), so use ``BaseHook.aget_connection``
    where it exists; Airflow 2.11 has none, and its synchronous look-up (a database or secrets
    backend call) is moved to a thread instead.
    """
    from airflow.providers.common.compat.sdk import BaseHook

    aget = getattr(BaseHook, "aget_connection", None)
    if aget is not None:
        conn: Connection = await aget(conn_id)
        return conn
    from asgiref.sync import sync_to_async

    return await sync_to_async(BaseHook.get_connection)(conn_id)  # type: ignore[no-any-return]


def skip_downstream(operator: Any, context: Any, tasks: list[Any]) -> None:
    """Mark ``tasks`` skipped, as ShortCircuitOperator does, on either Airflow line.

    Airflow 3's ``SkipMixin.skip`` takes the task instance (and raises internally to tell the
    supervisor); 2.11's takes the dag run and its logical date.
    """
    if not tasks:
        return
    if AIRFLOW_V_3_0_PLUS:
        operator.skip(ti=context["ti"], tasks=tasks)
    else:
        dag_run = context["dag_run"]
        operator.skip(
            dag_run=dag_run,
            execution_date=dag_run.execution_date,
            tasks=tasks,
            map_index=context["ti"].map_index,
        )
