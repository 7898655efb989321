"""``localleads_conn_id`` is a template field of the operator and the sensor: one real DAG run.

The connection id comes from ``{{ params.conn }}``; ``localleads_default`` points at another sandbox
that must see no request at all, so every request (the operator's, the sensor's first check on the
worker, and the trigger's polls in the triggerer) provably went through the rendered id.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_localleads.operators.credits import CheckCreditsOperator
from airflow_provider_localleads.sandbox import BALANCE_PATH, SandboxServer
from airflow_provider_localleads.sensors.credits import CreditsSensor
from airflow_provider_localleads.triggers.credits import CreditsTrigger

pytestmark = [pytest.mark.dagrun, pytest.mark.timeout(120)]

TEMPLATED_CONN = "localleads_from_params"


@pytest.fixture
def trigger_conn_ids(monkeypatch) -> list[str]:
    """The connection id of every CreditsTrigger built (by the sensor, and on 3.x rebuilt from serialize())."""
    seen: list[str] = []
    original = CreditsTrigger.__init__

    def spy(self, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        seen.append(self.localleads_conn_id)

    monkeypatch.setattr(CreditsTrigger, "__init__", spy)
    return seen


def test_conn_id_from_a_template_is_used_by_operator_sensor_and_trigger(
    run_dag, make_dag, sandbox_conn, when_polled, trigger_conn_ids
):
    default = sandbox_conn.sandbox  # what localleads_default points at: must stay untouched
    with SandboxServer() as chosen:
        chosen.set_balance(monthly=100, bonus=25, used=120)  # 5 available: the sensor has to wait
        sandbox_conn.set(sandbox=chosen, extra={"max_retries": 1}, conn_id=TEMPLATED_CONN)
        with make_dag(params={"conn": TEMPLATED_CONN}) as dag:
            check = CheckCreditsOperator(task_id="check", estimated_cost=1, localleads_conn_id="{{ params.conn }}")
            wait = CreditsSensor(
                task_id="wait",
                estimated_cost=50,
                localleads_conn_id="{{ params.conn }}",
                deferrable=True,
                poke_interval=0.2,
                timeout=60,
            )
            check >> wait

        # check (1) + the sensor's first check (2) + the trigger's first poll (3), then a top-up.
        with when_polled(chosen, 0.3, lambda: chosen.top_up(100), after_requests=3):
            result = run_dag(dag)

        assert dict(result) == {"check": "success", "wait": "success"}
        assert result.xcom("wait")["available_credits"] == 105
        off = {"forecast_days": None, "warn_below": None}  # the other templated fields, not set
        for task_id, cost, fields in (("check", 1, off), ("wait", 50, {"forecast_days": None})):
            # estimated_cost is no template: kept as given
            rendered = {"estimated_cost": cost, "localleads_conn_id": TEMPLATED_CONN, **fields}
            assert result.rendered_fields(task_id) == rendered
        assert trigger_conn_ids  # it did defer
        assert set(trigger_conn_ids) == {TEMPLATED_CONN}
        assert chosen.request_count(BALANCE_PATH) >= 4
        assert default.request_count() == 0
