"""The few places where Airflow 2.11 and 3.x differ, kept in one module.

Everything else imports Airflow names from ``airflow.providers.common.compat.sdk``, which resolves
them on both lines (and connections in the triggerer from ``common.compat.connection``). What is
left here differs in behaviour, not only in import path.
"""

from __future__ import annotations

from typing import Any

from packaging.version import Version


def airflow_version() -> Version:
    from airflow import __version__

    return Version(Version(__version__).base_version)


AIRFLOW_V_3_0_PLUS = airflow_version() >= Version("3.0.0")


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


def require_asset_watchers(what: str) -> None:
    """Refuse to build a credit watcher on Airflow 2, which has no ``AssetWatcher`` to run it."""
    if not AIRFLOW_V_3_0_PLUS:
        from airflow_provider_localleads.exceptions import LocalLeadsConfigurationError

        raise LocalLeadsConfigurationError(
            f"{what} needs Airflow 3 (event-driven scheduling with AssetWatcher); this is Airflow "
            f"{airflow_version()}. On Airflow 2, wait for credits inside a DAG run with CreditsSensor instead"
        )
