"""After every scenario: the canary API key is in no file the deployment wrote and no database table,
and no process of the deployment listens beyond loopback.

The key was typed into the connection (REST API, as the UI form posts it) and the sandbox accepts
only it. Airflow stores the connection's password Fernet-encrypted: that one value may hold the key
(and must: it proves the scan can read encrypted values). Every other Fernet token in the database
(trigger kwargs among them) is decrypted and searched too.
"""

from __future__ import annotations

import re

import pytest
from deployment_airflow import Deployment
from deployment_services import listening_sockets

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1800)]

FERNET_TOKEN = re.compile(r"gAAAAA[A-Za-z0-9_=-]{20,}")
SCENARIOS = ("sensor_scenario", "reschedule_scenario", "preflight_scenario", "control_scenario")


@pytest.fixture(scope="module")
def finished(deployment: Deployment, request: pytest.FixtureRequest) -> Deployment:
    """The deployment once every scenario has run (whatever order pytest ran the modules in)."""
    for name in SCENARIOS:
        request.getfixturevalue(name)
    return deployment


def test_the_key_is_in_no_file_the_deployment_wrote(finished: Deployment) -> None:
    key = finished.api_key.encode()
    files = finished.log_files()
    task_logs = [p for p in files if "dag_id=" in str(p)]
    assert len(task_logs) >= 50, "fewer task logs than sensors: the scan would prove little"
    assert [str(p) for p in files if key in p.read_bytes()] == []


def test_the_key_is_in_no_table(finished: Deployment) -> None:
    key = finished.api_key
    fernet = finished.fernet()
    leaks, stored_keys = [], 0
    for table, column, text in finished.table_rows():
        if key in text:
            leaks.append((table, column, "plain"))
        for token in FERNET_TOKEN.findall(text):
            plain = fernet.decrypt(token.encode()).decode(errors="replace")
            if key not in plain:
                continue
            if (table, column) == ("connection", "password"):
                stored_keys += 1
            else:
                leaks.append((table, column, "encrypted"))
    assert leaks == []
    assert stored_keys == 1, "the connection's encrypted password should hold the key exactly once"


def test_every_port_is_on_loopback(finished: Deployment) -> None:
    pids = [pid for service in finished.services for pid in service.pids()]
    sockets = listening_sockets(pids)
    assert sockets, "found no listening socket at all: the check would prove nothing"
    assert [(pid, address) for pid, address in sockets if not address.startswith(("127.", "[::1]"))] == []
