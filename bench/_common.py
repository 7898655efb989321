"""Shared helpers for the benchmark scripts: machine description, a table printer, a sandbox process.

Only the standard library (and the provider itself), so every script runs in the environments that
``python3 dev.py test`` creates (``.venvs/airflow-<version>/bin/python bench/<name>.py``).
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def isolate_airflow_home() -> str:
    """A throw-away AIRFLOW_HOME (set before Airflow is imported), so no user config leaks in."""
    home = tempfile.mkdtemp(prefix="localleads-bench-home-")
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home}/airflow.db"
    os.environ.pop("LOCALLEADS_API_KEY", None)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        os.environ.pop(name, None)
    return home


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.machine()


def airflow_version(python: str = sys.executable) -> str:
    code = "import importlib.metadata as m; print(m.version('apache-airflow'))"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        return "?"
    return out.stdout.strip()


def machine_line(python: str = sys.executable) -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores ({usable} usable), {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; Airflow {airflow_version(python)}"
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A small markdown table (pastes straight into the README)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    for row in cells[1:]:
        print(line(row))


@contextmanager
def sandbox_process(*args: str) -> Iterator[tuple[str, str]]:
    """Run ``python -m airflow_provider_localleads.sandbox --port 0 ARGS`` in its own process.

    Yields ``(base_url, connection_json)``. Its own process, so its handler threads never compete
    with the measured code for this interpreter's GIL.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_localleads.sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"on (http://\S+) -- export AIRFLOW_CONN_LOCALLEADS_DEFAULT=(.+)$", first.strip())
        if match is None:
            raise RuntimeError(f"unexpected sandbox banner: {first!r}")
        yield match.group(1), shlex.split(match.group(2))[0]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def connections_opened(session: object, url: str) -> int | None:
    """How many connections a ``requests.Session`` opened so far (urllib3 pools' ``num_connections``)."""
    try:
        manager = session.get_adapter(url).poolmanager  # type: ignore[attr-defined]
        return sum(manager.pools[key].num_connections for key in manager.pools.keys())  # noqa: SIM118 - not iterable
    except (AttributeError, KeyError, TypeError):
        return None
