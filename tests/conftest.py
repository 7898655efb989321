"""Test session set-up: a private, throw-away Airflow home, configured before Airflow is imported.

Airflow reads its configuration when first imported, so this runs at conftest import time. A fresh
AIRFLOW_HOME per session also means no leftover trigger rows or connections from earlier runs.

A Fernet key is set as in every deployment (``airflow db migrate`` writes one into a new airflow.cfg):
connections stored in the metadata database are encrypted, and the Airflow subprocesses the tests
start inherit the key, so a break in that path (cryptography 51 on Airflow 2.11-3.1) fails tests.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
_HOME = tempfile.mkdtemp(prefix="localleads-airflow-home-")

os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "example_dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
os.environ.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
os.environ["AIRFLOW__CORE__FERNET_KEY"] = Fernet.generate_key().decode()
# Tests choose their API key explicitly; a developer's real key must never leak into them.
os.environ.pop("LOCALLEADS_API_KEY", None)
for _name in list(os.environ):
    if _name.startswith("AIRFLOW_CONN_LOCALLEADS"):
        os.environ.pop(_name)
