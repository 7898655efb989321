"""Run the pre-flight cases under ``dag.test()`` and print their task states as one JSON line.

``python dag_test_states.py SANDBOX_URL CASES_JSON`` with the environment from
``Deployment.dag_test_env`` (a private SQLite home whose DAGs folder holds the DAG files). CASES_JSON is
``{case: [dag_id, estimated_cost]}``; before each case the sandbox is set to 100 credits available,
as in the scheduler's runs. Prints ``{case: {task_id: [state, try_number]}}``.
"""

from __future__ import annotations

import inspect
import json
import os
import sys


def main(sandbox_url: str, cases: dict[str, list[object]]) -> None:
    from airflow.utils.db import initdb

    try:  # Airflow 3.2+
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # 3.0, 3.1
        from airflow.models.dagbag import DagBag

    from airflow_provider_localleads.sandbox import SandboxClient

    initdb()
    # include_examples is gone from 3.3's DagBag (it never loads Airflow's examples there).
    kwargs = {"include_examples": False} if "include_examples" in inspect.signature(DagBag).parameters else {}
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"], **kwargs)
    assert not bag.import_errors, bag.import_errors
    sandbox = SandboxClient(sandbox_url)
    result = {}
    for case, (dag_id, cost) in cases.items():
        sandbox.set_balance(monthly=100, bonus=0, used=0)
        dag_run = bag.get_dag(str(dag_id)).test(run_conf={"estimated_cost": cost})
        result[case] = {
            ti.task_id: [str(getattr(ti.state, "value", ti.state)), ti.try_number]
            for ti in dag_run.get_task_instances()
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
