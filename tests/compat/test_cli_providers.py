"""``airflow providers ...`` shows the provider the way Airflow shows its own (Airflow 3.3 and 2.11).

The four commands run once per module, in parallel, as real ``airflow`` subprocesses of this venv,
with ``-v``: without it the ``providers`` commands silence all logging, which would hide
ProvidersManager's warnings about a provider (invalid provider info, a hook that cannot be loaded).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from compat_support import (
    AIRFLOW_BIN,
    CONN_TYPE,
    EXTRA_FIELDS,
    FORM_FROM_WIDGETS,
    HOOK_CLASS,
    PROVIDER_DIST,
    PROVIDER_VERSION,
    AirflowHome,
    parse_json_output,
    provider_complaints,
)

COMMANDS = ("list", "hooks", "widgets", "behaviours")


@dataclass(frozen=True)
class Output:
    returncode: int
    stdout: str
    stderr: str

    def rows(self) -> list[dict[str, Any]]:
        assert self.returncode == 0, f"exit {self.returncode}\n{self.stdout[-2000:]}\n{self.stderr[-3000:]}"
        rows = parse_json_output(self.stdout)
        assert isinstance(rows, list)
        return rows


@pytest.fixture(scope="module")
def providers_cli(cli_home: AirflowHome) -> dict[str, Output]:
    """``airflow providers <cmd> -o json -v`` for each command, run concurrently."""
    procs = {
        cmd: subprocess.Popen(
            [str(AIRFLOW_BIN), "providers", cmd, "-o", "json", "-v"],
            env=cli_home.env(),
            cwd=cli_home.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in COMMANDS
    }
    outputs = {}
    for cmd, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=180)
        outputs[cmd] = Output(proc.returncode, stdout, stderr)
    return outputs


def _ours(rows: list[dict[str, Any]], key: str, value: str) -> list[dict[str, Any]]:
    return [row for row in rows if str(row.get(key, "")).startswith(value)]


def test_providers_list_shows_distribution_and_version(providers_cli: dict[str, Output]) -> None:
    ours = _ours(providers_cli["list"].rows(), "package_name", PROVIDER_DIST)
    assert len(ours) == 1, ours
    assert ours[0]["package_name"] == PROVIDER_DIST
    assert ours[0]["version"] == PROVIDER_VERSION
    assert "LocalLeads" in ours[0]["description"]


def test_providers_hooks_shows_connection_type_and_hook(providers_cli: dict[str, Output]) -> None:
    ours = _ours(providers_cli["hooks"].rows(), "connection_type", CONN_TYPE)
    assert len(ours) == 1, ours
    assert ours[0] == {
        "connection_type": CONN_TYPE,
        "class": HOOK_CLASS,
        "conn_id_attribute_name": "localleads_conn_id",
        "package_name": PROVIDER_DIST,
        "hook_name": "LocalLeads",
    }


def test_providers_widgets_lists_the_extra_fields(providers_cli: dict[str, Output]) -> None:
    """2.11-3.1 list the hook's wtforms fields; 3.2+ list ``conn-fields`` with their JSON-schema types."""
    ours = {
        row["connection_parameter_name"]: row
        for row in providers_cli["widgets"].rows()
        if row.get("connection_parameter_name", "").startswith(f"extra__{CONN_TYPE}__")
    }
    assert sorted(ours) == sorted(f"extra__{CONN_TYPE}__{name}" for name in EXTRA_FIELDS)
    assert all(row["package_name"] == PROVIDER_DIST for row in ours.values())
    kinds = {name: ours[f"extra__{CONN_TYPE}__{name}"]["field_type"] for name in EXTRA_FIELDS}
    if not FORM_FROM_WIDGETS:
        assert kinds == {
            "timeout": ["number", "null"],
            "max_retries": ["integer", "null"],
            "allow_insecure_http": ["boolean", "null"],
        }
    else:
        assert kinds["max_retries"] == "IntegerField"
        assert kinds["allow_insecure_http"] == "BooleanField"
        # A StringField validated as a number: 2.11 refuses DecimalField and would drop the whole hook.
        assert kinds["timeout"] == "StringField"


def test_providers_behaviours_lists_the_connection_type(providers_cli: dict[str, Output]) -> None:
    rows = providers_cli["behaviours"].rows()
    assert {"field_behaviours": CONN_TYPE} in rows


def test_no_warning_or_error_about_the_provider(providers_cli: dict[str, Output]) -> None:
    """Provider info validates and the hook loads: no log line names the provider with a complaint."""
    complaints = {cmd: provider_complaints(out.stdout + out.stderr) for cmd, out in providers_cli.items()}
    assert complaints == {cmd: [] for cmd in COMMANDS}
    assert all(out.returncode == 0 for out in providers_cli.values())


def _airflow_schema(name: str) -> dict[str, Any]:
    import airflow

    return json.loads((Path(airflow.__file__).parent / name).read_text())  # type: ignore[no-any-return]


def test_provider_info_validates_against_airflows_own_schemas() -> None:
    """The JSON schemas ProvidersManager validates with, from the installed Airflow (in-process)."""
    import jsonschema

    from airflow_provider_localleads import get_provider_info
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

    info = get_provider_info()
    jsonschema.validate(info, _airflow_schema("provider_info.schema.json"))
    assert info["package-name"] == PROVIDER_DIST
    assert info["versions"][0] == PROVIDER_VERSION
    behaviour_schema = _airflow_schema("customized_form_field_behaviours.schema.json")
    (conn_type,) = info["connection-types"]
    kebab = conn_type["ui-field-behaviour"]
    # 3.x reads the kebab-case provider-info keys, 2.11 the hook classmethod: both must validate.
    jsonschema.validate(
        {
            "hidden_fields": kebab["hidden-fields"],
            "relabeling": kebab["relabeling"],
            "placeholders": kebab["placeholders"],
        },
        behaviour_schema,
    )
    jsonschema.validate(LocalLeadsHook.get_ui_field_behaviour(), behaviour_schema)
