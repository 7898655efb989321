"""The pytest plugin (``sandbox/pytest_plugin.py``): its fixtures, in this session and in a user's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from sandbox_support import ROOT, subprocess_env


def test_connection_fixture_sets_the_airflow_env_var(localleads_sandbox, localleads_sandbox_connection):
    assert localleads_sandbox_connection == "localleads_default"
    assert json.loads(os.environ["AIRFLOW_CONN_LOCALLEADS_DEFAULT"]) == {
        "conn_type": "localleads",
        "host": localleads_sandbox.url,
        "password": localleads_sandbox.api_key,
    }
    assert localleads_sandbox.running
    assert localleads_sandbox.host == "127.0.0.1"


@pytest.mark.parametrize("how", ["conftest", "-p"])
def test_plugin_works_for_a_user_project(tmp_path, how):
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import json, os, urllib.request

            STASH = {}

            def test_dag_side(localleads_sandbox, localleads_sandbox_connection):
                conn = json.loads(os.environ["AIRFLOW_CONN_LOCALLEADS_DEFAULT"])
                request = urllib.request.Request(
                    conn["host"] + "/api/v1/credits/balance",
                    headers={"Authorization": "Bearer " + conn["password"]},
                )
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(request, timeout=5) as response:
                    assert json.load(response)["data"]["availableCredits"] == 82
                assert localleads_sandbox.request_count("/api/v1/credits/balance") == 1
                STASH["sandbox"] = localleads_sandbox

            def test_cleaned_up():
                assert "AIRFLOW_CONN_LOCALLEADS_DEFAULT" not in os.environ
                assert not STASH["sandbox"].running
            """
        )
    )
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    if how == "conftest":
        (tmp_path / "conftest.py").write_text(
            'pytest_plugins = ["airflow_provider_localleads.sandbox.pytest_plugin"]\n'
        )
    else:
        args[3:3] = ["-p", "airflow_provider_localleads.sandbox.pytest_plugin"]
    env = subprocess_env()
    env.pop("AIRFLOW_CONN_LOCALLEADS_DEFAULT", None)
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_sandbox_package_does_not_import_airflow():
    code = (
        "import sys, airflow_provider_localleads.sandbox, airflow_provider_localleads.sandbox.pytest_plugin;"
        "import airflow_provider_localleads.sandbox.__main__;"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def _readme_test_example() -> str:
    """The README's example of a user's DAG test (the python block that asks for localleads_airflow_home)."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    return next(block for block in blocks if "def test_" in block and "localleads_airflow_home" in block)


def _pytest_in(project, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """pytest in ``project`` as a new user runs it: none of this session's Airflow or sandbox settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LOCALLEADS"))}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_readme_dag_test_passes_as_written_in_a_fresh_project(tmp_path):
    """A new project (dags/ + tests/, no conftest, no configuration) and the provider installed: the
    README's test passes in a pytest of its own, with a fresh Airflow home from the fixture."""
    pytest.importorskip("airflow")
    (tmp_path / "dags").mkdir()
    shutil.copy(ROOT / "example_dags" / "localleads_preflight.py", tmp_path / "dags")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_preflight.py").write_text(_readme_test_example())
    done = _pytest_in(tmp_path, "tests", timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


def test_the_airflow_home_fixture_refuses_an_airflow_imported_before_it(tmp_path):
    pytest.importorskip("airflow")
    (tmp_path / "test_early.py").write_text(
        "import airflow  # imported at the top: too early\n\n\ndef test_x(localleads_airflow_home):\n    pass\n"
    )
    done = _pytest_in(tmp_path, "test_early.py", timeout=300)
    assert done.returncode != 0
    assert "Import DagBag and your DAGs inside the test function instead" in done.stdout + done.stderr
