"""The plugin module: registered where Airflow looks, and cheap for every process that loads plugins."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

from airflow_provider_localleads import get_provider_info

PLUGIN_CLASS = "airflow_provider_localleads.ui.plugin.LocalLeadsCreditsPlugin"

CHILD = """
import json, sys
try:
    import airflow.sdk  # what an Airflow 3 process has loaded before its plugins
except ImportError:
    import airflow, airflow.plugins_manager  # Airflow 2.11
before = set(sys.modules)
import airflow_provider_localleads.ui.plugin as plugin
print(json.dumps({"added": sorted(set(sys.modules) - before), "name": plugin.LocalLeadsCreditsPlugin.name}))
"""


def test_registered_through_the_entry_point_and_provider_info() -> None:
    (entry,) = [ep for ep in entry_points(group="airflow.plugins") if ep.name == "localleads_credits"]
    assert entry.value == PLUGIN_CLASS.rpartition(".")[0] + ":LocalLeadsCreditsPlugin"
    assert get_provider_info()["plugins"] == [{"name": "localleads_credits", "plugin-class": PLUGIN_CLASS}]


def test_importing_the_plugin_loads_no_web_framework_and_nothing_of_the_page() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])

    assert result["name"] == "localleads_credits"
    added = result["added"]
    roots = {name.split(".")[0] for name in added}
    assert not roots & {"fastapi", "starlette", "flask", "flask_appbuilder", "requests", "httpx", "pendulum"}, added
    ours = [name for name in added if name.startswith("airflow_provider_localleads")]
    # The package itself (version and provider info) may already be loaded by Airflow's providers manager.
    assert set(ours) - {"airflow_provider_localleads"} == {
        "airflow_provider_localleads.ui",
        "airflow_provider_localleads.ui.plugin",
    }, ours


LOADS_PLUGINS = """
import json, sys
from airflow import plugins_manager as pm
WEB = ("flask", "flask_appbuilder", "fastapi", "starlette")
before = {m for m in WEB if m in sys.modules}  # Airflow 3.0 has FastAPI loaded already here
pm.ensure_plugins_loaded()
pm.integrate_macros_plugins()
names = [getattr(p, "name", None) for p in (pm.plugins or [])] if hasattr(pm, "plugins") else None
if names is None:
    names = [info["name"] for info in pm.get_plugin_info(attrs_to_dump=["name"])]
web = sorted(m for m in WEB if m in sys.modules and m not in before)
print(json.dumps({"plugins": names, "web": web}))
"""


def test_a_process_that_loads_plugins_but_serves_no_ui_imports_no_web_framework_for_ours() -> None:
    """What a worker, the scheduler or the triggerer do with plugins; only the UI server reads the views."""
    out = subprocess.run([sys.executable, "-c", LOADS_PLUGINS], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])

    assert "localleads_credits" in result["plugins"]
    assert result["web"] == [], result


def test_appbuilder_views_on_each_line() -> None:
    from airflow_provider_localleads._compat import AIRFLOW_V_3_0_PLUS
    from airflow_provider_localleads.ui.plugin import LocalLeadsCreditsPlugin

    views = LocalLeadsCreditsPlugin.appbuilder_views
    if AIRFLOW_V_3_0_PLUS:
        assert views == []  # the FastAPI app serves the page
    else:
        assert [(view["name"], view["category"]) for view in views] == [("LocalLeads credits", "Browse")]
        assert LocalLeadsCreditsPlugin().appbuilder_views is views  # read from an instance too
