"""Test session set-up: a private, throw-away Airflow home, configured before Airflow is imported.

Airflow reads its configuration when first imported, so this runs at conftest import time. A fresh
AIRFLOW_HOME per session also means no leftover trigger rows or connections from earlier runs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_HOME = tempfile.mkdtemp(prefix="localleads-airflow-home-")

os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "example_dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
os.environ.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
# Tests choose their API key explicitly; a developer's real key must never leak into them.
os.environ.pop("LOCALLEADS_API_KEY", None)
for _name in list(os.environ):
    if _name.startswith("AIRFLOW_CONN_LOCALLEADS"):
        os.environ.pop(_name)
