"""Unit tests for the provider registration: get_provider_info(), the entry point, a cheap import."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_localleads
from airflow_provider_localleads import get_provider_info

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return get_provider_info()


@pytest.fixture(scope="module")
def connection_type(info: dict[str, Any]) -> dict[str, Any]:
    (entry,) = [c for c in info["connection-types"] if c["connection-type"] == "localleads"]
    return entry


def import_dotted(name: str) -> Any:
    module_name, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def test_package_name_matches_the_distribution(info: dict[str, Any]) -> None:
    assert info["package-name"] == "airflow-provider-localleads"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == info["package-name"]


def test_version_is_the_package_version(info: dict[str, Any]) -> None:
    assert info["versions"] == [airflow_provider_localleads.__version__]


def test_provider_info_is_json_serialisable(info: dict[str, Any]) -> None:
    assert json.loads(json.dumps(info)) == info


def test_connection_type_points_at_an_existing_hook(connection_type: dict[str, Any]) -> None:
    hook_class = import_dotted(connection_type["hook-class-name"])

    assert hook_class.__name__ == "LocalLeadsHook"
    assert hook_class.conn_type == "localleads"
    assert hook_class.default_conn_name == "localleads_default"
    assert hook_class.conn_name_attr == "localleads_conn_id"
    assert connection_type["hook-name"] == hook_class.hook_name


@pytest.mark.parametrize("section", ["hooks", "operators", "sensors", "triggers"])
def test_listed_python_modules_import(info: dict[str, Any], section: str) -> None:
    modules = [m for entry in info[section] for m in entry["python-modules"]]
    assert modules
    for module in modules:
        importlib.import_module(module)


def test_conn_fields_declare_the_three_extras(connection_type: dict[str, Any]) -> None:
    fields = connection_type["conn-fields"]
    assert set(fields) == {"timeout", "max_retries", "allow_insecure_http"}
    for name, field in fields.items():
        assert field["label"], name
        assert "schema" in field, name
    assert "number" in fields["timeout"]["schema"]["type"]
    assert "integer" in fields["max_retries"]["schema"]["type"]
    assert fields["max_retries"]["schema"]["maximum"] == 10
    assert "boolean" in fields["allow_insecure_http"]["schema"]["type"]


def test_ui_hides_login_schema_and_port(connection_type: dict[str, Any]) -> None:
    behaviour = connection_type["ui-field-behaviour"]
    assert set(behaviour["hidden-fields"]) == {"login", "schema", "port"}
    assert behaviour["relabeling"]["password"] == "API key"
    assert behaviour["placeholders"]["host"] == "https://leadsapi.postorbit.io"


def test_hook_ui_field_behaviour_matches_provider_info(connection_type: dict[str, Any]) -> None:
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

    declared = connection_type["ui-field-behaviour"]
    hook = LocalLeadsHook.get_ui_field_behaviour()

    # Provider info uses dashed keys (its JSON schema), the hook classmethod underscored ones (Airflow 2.11).
    assert hook["hidden_fields"] == declared["hidden-fields"]
    assert hook["relabeling"] == declared["relabeling"]
    assert hook["placeholders"] == declared["placeholders"]


def test_hook_ui_field_behaviour_returns_copies() -> None:
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

    LocalLeadsHook.get_ui_field_behaviour()["hidden_fields"].append("host")
    assert "host" not in get_provider_info()["connection-types"][0]["ui-field-behaviour"]["hidden-fields"]


def test_entry_point_is_declared_in_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry_points = pyproject["project"]["entry-points"]["apache_airflow_provider"]
    assert list(entry_points.values()) == ["airflow_provider_localleads:get_provider_info"]

    module_name, _, attr = entry_points["provider_info"].partition(":")
    assert getattr(importlib.import_module(module_name), attr) is get_provider_info


def test_importing_the_package_is_cheap() -> None:
    code = (
        "import json, sys\n"
        "import airflow_provider_localleads\n"
        "airflow_provider_localleads.get_provider_info()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60, check=True
    )
    loaded = set(json.loads(completed.stdout))

    assert "airflow_provider_localleads" in loaded
    for heavy in ("requests", "httpx", "airflow", "airflow_provider_localleads.sandbox", "pendulum"):
        assert heavy not in loaded, f"importing the package imported {heavy}"
    leaked = sorted(m for m in loaded if m.startswith("airflow_provider_localleads."))
    assert leaked == [], f"importing the package imported submodules {leaked}"
