"""The paid task checks for itself: ``require_credits`` at the start of the task that spends.

    run_lead_search

A check in a task of its own (``CheckCreditsOperator``) answers "could we afford it a moment ago?".
When several runs may spend the same account at once, the check belongs inside the paid task, right
before it spends, and the paid tasks of one account belong in one Airflow pool with one slot, so each
check and the spending after it run one at a time (README: "Concurrent runs: one pool per account").

``require_credits`` reads the balance once. Not enough credits: with ``on_insufficient="fail"`` (the
default) the task fails at once, without retrying and before spending anything, saying what is
needed, what is available and when the credits reset; ``"skip"`` skips the task instead.

Try it against the sandbox::

    python -m airflow_provider_localleads.sandbox --port 8765   # prints the connection to export
    airflow dags test localleads_paid_search -c '{"estimated_cost": 30}'     # checks, then spends 30
    airflow dags test localleads_paid_search -c '{"estimated_cost": 5000}'   # fails: not enough credits
"""

from __future__ import annotations

import logging
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task

log = logging.getLogger("airflow.task")

SEARCH_DESCRIPTION = "Lead search: Dentists in Austin, TX"

with DAG(
    dag_id="localleads_paid_search",
    description="A paid task that checks the LocalLeads balance itself before it spends.",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["localleads", "example"],
    params={"estimated_cost": Param(30, type="integer", minimum=0, description="Credits this run will use")},
    doc_md=__doc__,
) as dag:
    # In production: @task(pool="localleads_acme"), a pool with one slot per LocalLeads account
    # (`airflow pools set localleads_acme 1 "..."`), so concurrent runs cannot jointly overspend.
    @task
    def run_lead_search(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check, then spend. Spends credits ONLY on the local sandbox (replace it with your real call)."""
        from urllib.parse import urlsplit

        from airflow.providers.common.compat.sdk import AirflowFailException

        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
        from airflow_provider_localleads.sandbox import SandboxClient, is_loopback_host

        cost = int((params or {})["estimated_cost"])
        with LocalLeadsHook() as hook:
            balance = hook.require_credits(cost)  # fails here, before anything is spent, if short
            base_url = hook.settings.base_url
        if not is_loopback_host(urlsplit(base_url).hostname or ""):
            raise AirflowFailException(
                f"run_lead_search is a placeholder and only spends credits on the local LocalLeads sandbox, "
                f"but the connection points at {base_url}. Replace it with your real lead-search call."
            )
        transaction = SandboxClient(base_url).spend(cost, SEARCH_DESCRIPTION) if cost else None
        log.info("Spent %d of the %d available credits", cost, balance.available_credits)
        return {"spent": cost, "transaction_id": transaction["id"] if transaction else None}

    run_lead_search()
