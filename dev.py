#!/usr/bin/env python3
"""The project's two entry points: ``python3 dev.py demo`` and ``python3 dev.py test``.

Needs nothing but Python 3.11+. Each command builds (or reuses) its own virtual environments under
``.venvs/``: uv is installed into a small bootstrap venv with pip, then uv creates one environment
per tested Airflow version with this package installed in editable mode. Re-runs reuse them and
only reinstall when ``pyproject.toml`` or the Airflow version changes.

    python3 dev.py demo            # start the sandbox API and run the example DAGs against it
    python3 dev.py test            # ruff + mypy + pytest on every Airflow line we support
    python3 dev.py test -k hook    # extra arguments go to pytest

``LOCALLEADS_AIRFLOW_VERSIONS`` (comma-separated) overrides the Airflow versions tested.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENVS = ROOT / ".venvs"
# The newest release of each Airflow line we support; the first one also runs the demo.
AIRFLOW_VERSIONS = ["3.3.2", "2.11.2"]
UV_VERSION = "uv>=0.5"


def _log(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def _run(*cmd: str | Path, env: dict[str, str] | None = None, check: bool = True) -> int:
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, check=False)  # noqa: S603
    if check and result.returncode != 0:
        sys.exit(result.returncode)
    return result.returncode


def _bin(env_dir: Path, name: str) -> Path:
    return env_dir / ("Scripts" if os.name == "nt" else "bin") / name


def _uv() -> Path:
    """uv, installed once into .venvs/bootstrap with the standard library's venv and pip."""
    boot = VENVS / "bootstrap"
    uv = _bin(boot, "uv")
    if not uv.exists():
        _log("Installing uv into .venvs/bootstrap")
        venv.EnvBuilder(with_pip=True, clear=True).create(boot)
        _run(_bin(boot, "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", UV_VERSION)
    return uv


def ensure_env(airflow_version: str) -> Path:
    """Create/refresh .venvs/airflow-<version> with this package, its test extras and that Airflow."""
    env_dir = VENVS / f"airflow-{airflow_version}"
    python = _bin(env_dir, "python")
    stamp = env_dir / ".installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + airflow_version.encode()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    uv = _uv()
    _log(f"Preparing .venvs/airflow-{airflow_version} (Airflow {airflow_version}, Python {sys.version.split()[0]})")
    if not python.exists():
        _run(uv, "venv", "--quiet", "--python", sys.executable, env_dir)
    _run(
        uv, "pip", "install", "--quiet", "--python", python,
        "-e", f"{ROOT}[test]", f"apache-airflow=={airflow_version}",
    )  # fmt: skip
    stamp.write_text(digest)
    return python


def _versions() -> list[str]:
    raw = os.environ.get("LOCALLEADS_AIRFLOW_VERSIONS", "")
    return [v.strip() for v in raw.split(",") if v.strip()] or AIRFLOW_VERSIONS


def cmd_test(pytest_args: list[str]) -> int:
    failures = []
    for index, version in enumerate(_versions()):
        python = ensure_env(version)
        if index == 0:
            _log("ruff")
            _run(python, "-m", "ruff", "check", ".")
            _run(python, "-m", "ruff", "format", "--check", ".")
            _log("mypy")
            _run(python, "-m", "mypy")
        _log(f"pytest on Airflow {version}")
        code = _run(python, "-m", "pytest", *pytest_args, check=False)
        if code != 0:
            failures.append(version)
    if failures:
        _log(f"FAILED on Airflow {', '.join(failures)}")
        return 1
    _log(f"All green on Airflow {', '.join(_versions())}")
    return 0


def cmd_demo(args: list[str]) -> int:
    python = ensure_env(_versions()[0])
    return _run(python, ROOT / "scripts" / "demo.py", *args, check=False)


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        print(f"Python 3.11+ is required, this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    return cmd_test(argv[1:]) if argv[0] == "test" else cmd_demo(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
