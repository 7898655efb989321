"""Apache Airflow provider for the LocalLeads Credits API.

Importing this package must stay cheap: Airflow imports it in every scheduler, worker, triggerer and
DAG-processor process (the ``apache_airflow_provider`` entry point), so it holds only definitions.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

PRODUCTION_BASE_URL = "https://leadsapi.postorbit.io"

# The connection form. Airflow >= 3.2 builds it from this dictionary alone (the UI never imports
# the hook); Airflow 2.11 asks the hook's classmethods, which read these same values so that the
# two forms cannot drift apart.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["login", "schema", "port"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {
        "host": PRODUCTION_BASE_URL,
        "password": "empty: use the LOCALLEADS_API_KEY environment variable",
        "extra": '{"timeout": 30, "max_retries": 2}',
    },
}

CONN_FIELDS: dict[str, Any] = {
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Seconds allowed for each request. Empty: 5 s to connect, 30 s to read.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of a failed request (429, 5xx, network errors, timeouts). Empty: 2.",
        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 10},
    },
    "allow_insecure_http": {
        "label": "Allow plain http:// to a non-loopback host",
        "description": "Sends the API key unencrypted. Only for a trusted private network.",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
}


def _modules(*names: str) -> list[dict[str, Any]]:
    return [{"integration-name": "LocalLeads", "python-modules": list(names)}]


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-localleads",
        "name": "LocalLeads",
        "description": "Pre-flight credit checks for the LocalLeads API: hook, operator, sensor, triggers, watchers.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "LocalLeads",
                "external-doc-url": "https://leadsapi.postorbit.io",
                "tags": ["service"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "localleads",
                "hook-class-name": "airflow_provider_localleads.hooks.localleads.LocalLeadsHook",
                "hook-name": "LocalLeads",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
        "hooks": _modules("airflow_provider_localleads.hooks.localleads"),
        "operators": _modules("airflow_provider_localleads.operators.credits"),
        "sensors": _modules("airflow_provider_localleads.sensors.credits"),
        "plugins": [
            {
                "name": "localleads_credits",
                "plugin-class": "airflow_provider_localleads.ui.plugin.LocalLeadsCreditsPlugin",
            }
        ],
        "triggers": _modules(
            "airflow_provider_localleads.triggers.credits", "airflow_provider_localleads.triggers.events"
        ),
    }
