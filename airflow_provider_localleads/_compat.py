"""The few places where Airflow 2.11 and 3.x differ in behaviour, not only in import path (those come
from ``airflow.providers.common.compat``)."""

from __future__ import annotations

# The form widgets import Flask AppBuilder and wtforms inside the function: only the web server of
# Airflow 2.11-3.1 has them (3.0/3.1 mock them while they read the form).
from typing import Any

from airflow import __version__
from packaging.version import Version

from airflow_provider_localleads import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_localleads.exceptions import LocalLeadsConfigurationError

#: What the 2.11 form accepts for ``timeout``: a positive decimal number of seconds (30, 2.5, .5).
_SECONDS_PATTERN = r"^\s*(?:\d+(?:\.\d*)?|\.\d+)\s*$"


def airflow_version() -> Version:
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
    if not AIRFLOW_V_3_0_PLUS:
        raise LocalLeadsConfigurationError(
            f"{what} needs Airflow 3 (event-driven scheduling with AssetWatcher); this is Airflow "
            f"{airflow_version()}. On Airflow 2, wait for credits inside a DAG run with CreditsSensor instead"
        )


def connection_form_behaviour() -> dict[str, Any]:
    """The hook's form on Airflow 2.11-3.1, from the values 3.2+ reads in provider info (no drift)."""
    return {
        "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
        "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
        "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
    }


def connection_form_widgets() -> dict[str, Any]:
    """The typed extra fields of the Airflow 2.11-3.1 form (3.2+ builds them from ``conn-fields``)."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import NumberRange, Optional, Regexp

    def text(name: str) -> dict[str, Any]:
        return {"label": lazy_gettext(CONN_FIELDS[name]["label"]), "description": CONN_FIELDS[name]["description"]}

    return {
        # A StringField, not a DecimalField: Airflow 2.11 only accepts string, integer and boolean
        # extras (any other field type makes it drop the whole hook from the form and the CLI).
        # settings_from_connection parses the number and names the field if it is wrong.
        "timeout": StringField(
            validators=[Optional(), Regexp(_SECONDS_PATTERN, message="Enter a number of seconds, e.g. 30")],
            widget=BS3TextFieldWidget(),
            **text("timeout"),
        ),
        "max_retries": IntegerField(
            validators=[Optional(), NumberRange(min=0, max=10)], widget=BS3TextFieldWidget(), **text("max_retries")
        ),
        "allow_insecure_http": BooleanField(default=False, **text("allow_insecure_http")),
    }
