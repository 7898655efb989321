"""The example DAGs parse cleanly, offline, the way Airflow's DAG processor parses them.

Every check that imports a DAG file runs in a fresh interpreter with its own empty ``AIRFLOW_HOME``,
no LocalLeads connection and no sandbox running, and with the network cut off: ``socket.connect``
and DNS look-ups raise (and are recorded) for the whole life of that interpreter. A DAG file that
talked to the API (or anything else) at parse time would do so on every parse, every few seconds,
in every DAG processor, so this must never happen.

Also reported (not asserted where Airflow itself is the importer): which HTTP libraries importing
the provider's operator and sensor modules adds on top of what Airflow already imports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from airflow_provider_localleads._compat import AIRFLOW_V_3_0_PLUS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ROOT / "example_dags"
EXAMPLE_FILES = sorted(p.name for p in EXAMPLE_DAGS.glob("*.py"))
MARKER = "@@LOCALLEADS-RESULT@@"
HEAVY_MODULES = ("requests", "httpx", "aiohttp", "urllib3")

#: dag_id -> task ids, for the example DAGs the README and the demo rely on.
EXPECTED_DAGS: dict[str, set[str]] = {
    "localleads_preflight": {"check_credits", "run_lead_search", "report"},
    "localleads_wait_for_credits": {"wait_for_credits", "start_paid_work"},
    "localleads_credit_audit": {"summarise_transactions", "log_report"},
    "localleads_paid_search": {"run_lead_search"},
}

#: Event-driven examples (AssetWatcher): Airflow 3 only. On 2.11 these files load and define no DAG.
WATCHER_FILES = {"localleads_monthly_refresh.py", "localleads_credit_alerts.py"}
WATCHER_DAGS: dict[str, set[str]] = {
    "localleads_monthly_refresh": {"refresh_leads"},
    "localleads_credit_alerts": {"decide", "alert_low_credits", "resume_backlog"},
}

# Installed first in the child interpreter, before Airflow is imported.
_NETWORK_GUARD = textwrap.dedent(
    """
    import json, socket, sys

    NETWORK_ATTEMPTS = []

    def _refuse(what):
        def guard(*args, **kwargs):
            shown = [a for a in args if not isinstance(a, socket.socket)]
            NETWORK_ATTEMPTS.append(f"{what}{tuple(shown)!r}")
            raise OSError(f"network use while parsing DAG files: {what}{tuple(shown)!r}")
        return guard

    socket.socket.connect = _refuse("connect")
    socket.socket.connect_ex = _refuse("connect_ex")
    for _name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "create_connection"):
        setattr(socket, _name, _refuse(_name))

    def emit(payload):
        print(MARKER + json.dumps(payload, default=str), flush=True)
    """
)

_PARSE_SCRIPT = textwrap.dedent(
    """
    import inspect, os

    try:  # Airflow 3.x (this DagBag never loads Airflow's own examples)
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2.11
        from airflow.models.dagbag import DagBag

    kwargs = {}
    if "include_examples" in inspect.signature(DagBag.__init__).parameters:
        kwargs["include_examples"] = False

    # The Airflow names the examples are written with count as Airflow's: on 3.0, resolving ``task``
    # alone imports httpx (airflow.sdk decorators -> standard provider -> airflow.models -> api_fastapi).
    from airflow.providers.common.compat.sdk import DAG, Param, task  # noqa: F401

    heavy_before = sorted(m for m in HEAVY if m in sys.modules)
    files = {}
    for path in sys.argv[1:]:
        # One DagBag per file: each file must parse on its own, the way the DAG processor sees it.
        # The default safe_mode also checks that the file passes Airflow's "airflow" + "dag" heuristic.
        bag = DagBag(dag_folder=path, **kwargs)
        dags = {}
        for dag_id, dag in bag.dags.items():
            tasks = {}
            for t in dag.tasks:
                tasks[t.task_id] = {
                    "type": type(t).__name__,
                    "template_fields": list(getattr(t, "template_fields", ())),
                    "estimated_cost": getattr(t, "estimated_cost", None),
                    "on_insufficient": getattr(t, "on_insufficient", None),
                    "deferrable": getattr(t, "deferrable", None),
                    "poke_interval": getattr(t, "poke_interval", None),
                    "timeout": getattr(t, "timeout", None),
                    "soft_fail": getattr(t, "soft_fail", None),
                    "downstream": sorted(t.downstream_task_ids),
                }
            dags[dag_id] = {
                "tags": sorted(dag.tags),
                "timetable": type(dag.timetable).__name__,
                "catchup": dag.catchup,
                "params": sorted(dag.params.keys()),
                "tasks": tasks,
            }
        files[os.path.basename(path)] = {
            "dags": dags,
            "errors": {k: str(v) for k, v in bag.import_errors.items()},
        }
    emit({
        "files": files,
        "network": NETWORK_ATTEMPTS,
        "heavy_before_parse": heavy_before,
        "heavy_after_parse": sorted(m for m in HEAVY if m in sys.modules),
    })
    """
)

_IMPORT_WEIGHT_SCRIPT = textwrap.dedent(
    """
    import airflow
    # What the provider's modules themselves use from Airflow, so its cost is counted as Airflow's.
    from airflow.providers.common.compat.sdk import (
        AirflowException, AirflowFailException, BaseOperator, BaseSensorOperator, PokeReturnValue, SkipMixin, conf,
    )

    before = set(sys.modules)
    import airflow_provider_localleads.operators.credits
    import airflow_provider_localleads.sensors.credits
    added = sorted(set(sys.modules) - before)
    emit({
        "airflow_version": airflow.__version__,
        "airflow_imports": sorted(m for m in HEAVY if m in before),
        "added_by_provider": added,
        "network": NETWORK_ATTEMPTS,
    })
    """
)


def _child_env(home: Path) -> dict[str, str]:
    """The parent's environment minus any Airflow/LocalLeads settings, plus a throw-away AIRFLOW_HOME
    (and the session's Fernet key, as a deployment has one)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "LOCALLEADS_"))
        and name not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG")
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__FERNET_KEY": os.environ["AIRFLOW__CORE__FERNET_KEY"],
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


def _run_child(script: str, args: list[str], home: Path) -> dict[str, Any]:
    """Run ``script`` (after the network guard) in a fresh interpreter; return what it emitted."""
    source = f"MARKER = {MARKER!r}\nHEAVY = {HEAVY_MODULES!r}\n" + _NETWORK_GUARD + script
    proc = subprocess.run(
        [sys.executable, "-c", source, *args],
        env=_child_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result: dict[str, Any] = json.loads(line[len(MARKER) :])
            return result
    raise AssertionError(
        f"child interpreter exited with {proc.returncode} without a result\n"
        f"--- stdout (tail)\n{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-5000:]}"
    )


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every example DAG file parsed once, each by its own DagBag, in one guarded interpreter."""
    home = tmp_path_factory.mktemp("examples-airflow-home")
    return _run_child(_PARSE_SCRIPT, [str(EXAMPLE_DAGS / name) for name in EXAMPLE_FILES], home)


def _all_dags(parsed: dict[str, Any]) -> dict[str, Any]:
    return {dag_id: dag for f in parsed["files"].values() for dag_id, dag in f["dags"].items()}


# ------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------


def test_example_dags_folder_layout() -> None:
    assert EXAMPLE_FILES, f"no DAG files in {EXAMPLE_DAGS}"
    # The folder is a DAGs folder, not a package: users copy single files into their own.
    assert not (EXAMPLE_DAGS / "__init__.py").exists()


@pytest.mark.parametrize("filename", EXAMPLE_FILES)
def test_example_file_parses_without_errors(parsed: dict[str, Any], filename: str) -> None:
    result = parsed["files"][filename]
    assert result["errors"] == {}, f"{filename} failed to import:\n" + "\n".join(result["errors"].values())
    if filename in WATCHER_FILES and not AIRFLOW_V_3_0_PLUS:
        assert result["dags"] == {}, f"{filename} must define no DAG on Airflow 2 (no AssetWatcher)"
        return
    assert result["dags"], f"{filename} defines no DAG (or fails Airflow's safe-mode heuristic)"


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="AssetWatcher exists from Airflow 3.0 on")
def test_watcher_dags_are_scheduled_on_their_watched_assets(parsed: dict[str, Any]) -> None:
    dags = _all_dags(parsed)
    for dag_id, task_ids in WATCHER_DAGS.items():
        dag = dags[dag_id]
        assert set(dag["tasks"]) == task_ids, dag_id
        assert {"localleads", "example", "watcher"} <= set(dag["tags"]), dag_id
        assert dag["timetable"] == "AssetTriggeredTimetable", dag_id
        assert dag["catchup"] is False, dag_id


def test_no_network_while_parsing(parsed: dict[str, Any]) -> None:
    # Also covers importing Airflow and the provider: the guard is installed before either.
    assert parsed["network"] == [], f"network use while parsing the example DAGs: {parsed['network']}"


def test_expected_dags_and_tasks(parsed: dict[str, Any]) -> None:
    dags = _all_dags(parsed)
    assert set(EXPECTED_DAGS) <= set(dags), f"missing example DAGs: {set(EXPECTED_DAGS) - set(dags)}"
    for dag_id, task_ids in EXPECTED_DAGS.items():
        dag = dags[dag_id]
        assert set(dag["tasks"]) == task_ids, dag_id
        assert {"localleads", "example"} <= set(dag["tags"]), dag_id
        assert dag["timetable"] == "NullTimetable", f"{dag_id} should have schedule=None"
        assert dag["catchup"] is False, dag_id


def test_preflight_checks_first_and_skips(parsed: dict[str, Any]) -> None:
    dag = _all_dags(parsed)["localleads_preflight"]
    check = dag["tasks"]["check_credits"]
    assert check["type"] == "CheckCreditsOperator"
    assert check["estimated_cost"] == "{{ params.estimated_cost }}"
    assert check["on_insufficient"] == "skip"
    assert "estimated_cost" in dag["params"]
    # Nothing runs before the check, and the paid-for work comes after it.
    assert not any("check_credits" in t["downstream"] for t in dag["tasks"].values())
    assert "run_lead_search" in check["downstream"]
    assert "report" in dag["tasks"]["run_lead_search"]["downstream"]


def test_wait_for_credits_sensor_defaults(parsed: dict[str, Any]) -> None:
    sensor = _all_dags(parsed)["localleads_wait_for_credits"]["tasks"]["wait_for_credits"]
    assert sensor["type"] == "CreditsSensor"
    assert sensor["estimated_cost"] == "{{ params.estimated_cost }}"
    assert sensor["deferrable"] is True
    # Parsed without LOCALLEADS_EXAMPLE_POKE_INTERVAL: the documented default of 5 minutes.
    assert float(sensor["poke_interval"]) == 300.0
    assert float(sensor["timeout"]) == 6 * 3600
    assert sensor["soft_fail"] is False
    assert "start_paid_work" in sensor["downstream"]


def test_parsing_imports_no_http_library_beyond_airflow(parsed: dict[str, Any]) -> None:
    added = sorted(set(parsed["heavy_after_parse"]) - set(parsed["heavy_before_parse"]))
    assert added == [], f"parsing the example DAGs imported {added}; import them inside the tasks"


# ------------------------------------------------------------------------------------------------
# The poke interval knob of localleads_wait_for_credits (read from the environment at parse time)
# ------------------------------------------------------------------------------------------------


def _load_wait_module() -> ModuleType:
    path = EXAMPLE_DAGS / "localleads_wait_for_credits.py"
    spec = importlib.util.spec_from_file_location("_localleads_example_wait_for_credits", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("raw", "expected"), [(None, 300.0), ("", 300.0), ("2", 2.0), (" 0.5 ", 0.5)])
def test_poke_interval_from_env(monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: float) -> None:
    module = _load_wait_module()
    if raw is None:
        monkeypatch.delenv("LOCALLEADS_EXAMPLE_POKE_INTERVAL", raising=False)
    else:
        monkeypatch.setenv("LOCALLEADS_EXAMPLE_POKE_INTERVAL", raw)
    assert module._poke_interval_from_env() == expected


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "nan", "inf"])
def test_poke_interval_from_env_refuses_nonsense(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    module = _load_wait_module()
    monkeypatch.setenv("LOCALLEADS_EXAMPLE_POKE_INTERVAL", raw)
    with pytest.raises(ValueError, match="LOCALLEADS_EXAMPLE_POKE_INTERVAL"):
        module._poke_interval_from_env()


# ------------------------------------------------------------------------------------------------
# Import weight of the provider's operator and sensor modules
# ------------------------------------------------------------------------------------------------


def test_operator_and_sensor_modules_add_no_http_library(
    tmp_path: Path, record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Report what importing the operator/sensor modules adds; fail only if the provider adds an HTTP library.

    The hook (``requests``) and the trigger (``httpx``) are imported inside ``execute``/``run``, so a
    DAG file that uses the operator or the sensor pays for neither at parse time. Whatever Airflow
    itself already imports (on 3.x ``httpx``, on 2.11 ``requests``) is reported, not asserted.
    """
    result = _run_child(_IMPORT_WEIGHT_SCRIPT, [], tmp_path / "airflow-home")
    added = result["added_by_provider"]
    added_heavy = sorted({m.split(".")[0] for m in added} & set(HEAVY_MODULES))
    report = (
        f"Airflow {result['airflow_version']} already imports {result['airflow_imports'] or 'none'} of "
        f"{list(HEAVY_MODULES)}; importing the operator and sensor modules adds {len(added)} modules: {added}"
    )
    record_property("import_weight", report)
    with capsys.disabled():
        print(f"\n[import weight] {report}")
    assert result["network"] == []
    assert added_heavy == [], f"the provider's operator/sensor modules import {added_heavy} at import time"
