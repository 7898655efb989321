"""The built wheel, installed beside Airflow into a clean venv (not the checkout): what a user gets.

``python3 dev.py test`` (a whole run, or one naming tests/packaging) runs ``dev.py build``, installs
the wheel with Airflow 3.3.2 and with 2.11.2, each with its constraints file, into a clean
``.venvs/wheel-airflow-<version>``, and points the pytest run of that line here
(``LOCALLEADS_WHEEL_PYTHON``; ``LOCALLEADS_SDIST``: the sdist, whose example DAGs are loaded). On any
other run this module is skipped.

Everything runs in that venv's interpreters, in a fresh AIRFLOW_HOME with a Fernet key (as a
deployment has), after ``airflow db migrate``; each test prints what it checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
WHEEL_PYTHON = os.environ.get("LOCALLEADS_WHEEL_PYTHON", "")
SDIST = os.environ.get("LOCALLEADS_SDIST", "")
PROVIDER = "airflow-provider-localleads"
#: Event-driven examples (AssetWatcher): Airflow 3 only; on 2.11 these files load and define no DAG.
WATCHER_DAGS = {"localleads_monthly_refresh", "localleads_credit_alerts"}

pytestmark = pytest.mark.skipif(
    not (WHEEL_PYTHON and SDIST),
    reason="checks the built wheel: python3 dev.py test installs it (whole run, or tests/packaging named)",
)

# What the venv's own interpreter reports: where the provider is imported from, and its version.
_WHERE = """
import importlib.metadata as metadata, json, airflow, airflow_provider_localleads as provider
dist = metadata.distribution("airflow-provider-localleads")
print(json.dumps({"file": provider.__file__, "version": dist.version, "airflow": airflow.__version__,
                  "direct_url": json.loads(dist.read_text("direct_url.json") or "{}")}))
"""

# Every file of the DAG folder, the way the DAG processor parses it (3.x moved DagBag).
_LOAD_DAGS = """
import inspect, json, sys
import airflow
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
kwargs = {"include_examples": False} if "include_examples" in inspect.signature(DagBag).parameters else {}
bag = DagBag(dag_folder=sys.argv[1], **kwargs)
errors = {str(path): error for path, error in bag.import_errors.items()}
print(json.dumps({"airflow": airflow.__version__, "dag_ids": sorted(bag.dag_ids), "import_errors": errors}))
"""


@dataclass(frozen=True)
class Installed:
    python: Path
    home: Path
    sdist_dir: Path
    env: dict[str, str]

    def run(self, *args: str | Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(arg) for arg in args],
            env={**self.env, **env},
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def airflow(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.python.with_name("airflow"), *args, **env)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}: {result.args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def _last_json(stdout: str) -> Any:
    """The JSON document the command printed (3.x may log around it)."""
    lines = stdout.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(("[", "{")):
            try:
                return json.loads("\n".join(lines[index:]))
            except json.JSONDecodeError:
                continue
    raise AssertionError(f"no JSON in:\n{stdout[-3000:]}")


def _say(capsys: pytest.CaptureFixture[str], what: str) -> None:
    with capsys.disabled():
        print(f"\n    built wheel: {what}", end="")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A fresh AIRFLOW_HOME (its database migrated) for the wheel's venv; the sdist unpacked beside it."""
    base = tmp_path_factory.mktemp("built-wheel")
    with tarfile.open(SDIST) as sdist:
        sdist.extractall(base / "sdist", filter="data")
    (sdist_dir,) = (base / "sdist").iterdir()
    home = base / "airflow-home"
    home.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW_", "LOCALLEADS_", "PYTHON", "VIRTUAL_ENV"))
        and name.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(sdist_dir / "example_dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__FERNET_KEY=Fernet.generate_key().decode(),
        NO_PROXY="127.0.0.1,localhost",
        COLUMNS="400",
    )
    if "AIRFLOW__API_AUTH__JWT_ISSUER" in os.environ:  # a line's configuration (dev.py LINES)
        env["AIRFLOW__API_AUTH__JWT_ISSUER"] = os.environ["AIRFLOW__API_AUTH__JWT_ISSUER"]
    result = Installed(python=Path(WHEEL_PYTHON), home=home, sdist_dir=sdist_dir, env=env)
    _ok(result.airflow("db", "migrate"))
    return result


def test_the_provider_is_imported_from_the_wheel(installed: Installed, capsys: pytest.CaptureFixture[str]) -> None:
    where = _last_json(_ok(installed.run(installed.python, "-c", _WHERE)))
    venv = installed.python.parent.parent
    assert Path(where["file"]).is_relative_to(venv), where
    assert not Path(where["file"]).is_relative_to(ROOT / "airflow_provider_localleads"), where
    assert where["direct_url"].get("url", "").endswith(".whl"), where  # not editable, not the checkout
    assert not where["direct_url"].get("dir_info", {}).get("editable"), where
    assert f"-{where['version']}.tar.gz" in SDIST
    _say(capsys, f"{PROVIDER} {where['version']} imported from {where['file']} (Airflow {where['airflow']})")


def test_airflow_providers_list_shows_the_provider(installed: Installed, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _last_json(_ok(installed.airflow("providers", "list", "-o", "json")))
    ours = [row for row in rows if row.get("package_name") == PROVIDER]
    assert len(ours) == 1, rows
    assert "LocalLeads" in ours[0]["description"]
    _say(capsys, f"`airflow providers list` shows {PROVIDER} {ours[0]['version']}")


@pytest.fixture
def sandbox(installed: Installed) -> Iterator[tuple[str, str]]:
    """``python -m airflow_provider_localleads.sandbox`` from the wheel's venv: (its URL, its API key)."""
    key = f"sk_wheel_{os.urandom(8).hex()}"
    proc = subprocess.Popen(
        [str(installed.python), "-m", "airflow_provider_localleads.sandbox", "--port", "0", "--api-key", key],
        env=installed.env,
        cwd=installed.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r" on (http://\S+) ", first)
        assert match, f"the sandbox did not start: {first!r}"
        yield match.group(1), key
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_airflow_connections_test_passes_against_the_sandbox(
    installed: Installed, sandbox: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, key = sandbox
    add = ("connections", "add", "localleads_default", "--conn-type", "localleads", "--conn-host", url)
    _ok(installed.airflow(*add, "--conn-password", key))
    tested = installed.airflow("connections", "test", "localleads_default", AIRFLOW__CORE__TEST_CONNECTION="Enabled")
    output = _ok(tested)
    assert "Connection success!" in output, output[-3000:] + tested.stderr[-3000:]
    assert key not in output + tested.stderr
    _say(capsys, f"`airflow connections test localleads_default` (stored, encrypted) -> Connection success! ({url})")


def test_the_example_dags_load_without_import_errors(installed: Installed, capsys: pytest.CaptureFixture[str]) -> None:
    dags = installed.sdist_dir / "example_dags"
    files = sorted(dags.glob("*.py"))
    assert files, f"no example DAGs in the sdist ({dags})"
    loaded = _last_json(_ok(installed.run(installed.python, "-c", _LOAD_DAGS, dags)))
    assert loaded["import_errors"] == {}
    expected = {path.stem for path in files} - (WATCHER_DAGS if loaded["airflow"].startswith("2.") else set())
    assert set(loaded["dag_ids"]) == expected, loaded
    _say(capsys, f"the sdist's {len(files)} example DAG files load, no import error: {', '.join(loaded['dag_ids'])}")
