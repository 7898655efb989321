"""Pre-flight credit check: make sure the LocalLeads balance covers a lead search *before* running it.

    check_credits  ->  run_lead_search  ->  report

* ``check_credits`` (:class:`CheckCreditsOperator`) reads the balance with ONE API request and
  compares it with ``params.estimated_cost``. With enough credits it succeeds and pushes the
  balance to XCom; without, ``on_insufficient="skip"`` short-circuits the run: the check itself
  succeeds and every task after it is skipped (nothing is spent, nobody is paged).
* ``run_lead_search`` stands in for your paid-for work. Against the bundled sandbox it "spends"
  the credits the way a real search would; against any other host it refuses to do anything
  (replace it with your real lead-search call).
* ``report`` logs the balance before (the check's XCom) and after (a fresh balance request).

Try it against the sandbox::

    python -m airflow_provider_localleads.sandbox --port 8765   # prints the connection to export
    airflow dags test localleads_preflight -c '{"estimated_cost": 30}'     # runs, spends 30
    airflow dags test localleads_preflight -c '{"estimated_cost": 5000}'   # check ok, rest skipped

Works on Airflow 2.11 and 3.x: every Airflow name comes from ``airflow.providers.common.compat.sdk``.
"""

from __future__ import annotations

import logging
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_localleads.operators.credits import CheckCreditsOperator

# Nothing in this file talks to the network when the DAG is *parsed*: the scheduler/DAG processor
# re-reads DAG files every few seconds, so parse time must stay cheap and side-effect free. The
# operator only stores its arguments; the hook and the sandbox client are imported and used inside
# the tasks, i.e. only when a task actually runs on a worker.

log = logging.getLogger("airflow.task")

SEARCH_DESCRIPTION = "Lead search: Dentists in Austin, TX"

with DAG(
    dag_id="localleads_preflight",
    description="Check LocalLeads credits, then run a (sandbox) lead search only if they suffice.",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["localleads", "example"],
    params={
        # How many credits this run is expected to use. Override per run with
        # `airflow dags test localleads_preflight -c '{"estimated_cost": 120}'` or the UI's trigger form.
        "estimated_cost": Param(30, type="integer", minimum=0, description="Credits this run will use"),
    },
    doc_md=__doc__,
) as dag:
    # The check comes FIRST: credits are only worth checking before anything paid-for has started.
    # A search that runs out of credits half-way leaves partial, already-billed data behind.
    #
    # "skip" vs "fail": being short of credits is an expected business condition here (wait for the
    # monthly reset or a top-up), not a broken pipeline, so the run ends quietly with the paid-for
    # tasks marked *skipped*. Use on_insufficient="fail" (the default) when a short balance should
    # alert someone (failure callbacks, red runs in the UI); it fails without retrying, since
    # retrying would not make credits appear. To *wait* for credits instead, see
    # localleads_wait_for_credits.py (CreditsSensor).
    check_credits = CheckCreditsOperator(
        task_id="check_credits",
        # Templated: rendered when the task runs, so each run can bring its own estimate. Templates
        # render to strings; the operator accepts "30" but refuses "-5", "1.5" or "abc" up front.
        estimated_cost="{{ params.estimated_cost }}",
        on_insufficient="skip",
        # localleads_conn_id="localleads_default",  # the default connection id
    )

    @task
    def run_lead_search(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Stand-in for the paid-for work. Spends credits ONLY on the local sandbox.

        ``params`` is filled in by Airflow from the run's context (TaskFlow injects context
        variables into arguments with those names).
        """
        from urllib.parse import urlsplit

        from airflow.providers.common.compat.sdk import AirflowFailException

        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
        from airflow_provider_localleads.sandbox import SandboxClient, is_loopback_host

        cost = int((params or {})["estimated_cost"])
        # Reading the connection's settings validates it but sends no request.
        base_url = LocalLeadsHook().settings.base_url
        if not is_loopback_host(urlsplit(base_url).hostname or ""):
            # This is an example: it must never spend real credits. AirflowFailException fails the
            # task without retries, because retrying cannot fix it.
            raise AirflowFailException(
                f"run_lead_search is a placeholder and only spends credits on the local LocalLeads "
                f"sandbox, but the connection points at {base_url}. Replace this task with your real "
                "lead-search call (keep check_credits in front of it)."
            )
        if cost == 0:
            log.info("estimated_cost is 0: nothing to spend")
            return {"spent": 0, "transaction_id": None}
        # Your real task would call the lead-search API here; the sandbox records a DEDUCTION.
        transaction = SandboxClient(base_url).spend(cost, SEARCH_DESCRIPTION)
        log.info("Spent %d credits on the sandbox: %s (%s)", cost, transaction["description"], transaction["id"])
        return {"spent": cost, "transaction_id": transaction["id"]}

    @task
    def report(balance_before: dict[str, Any], search: dict[str, Any]) -> dict[str, Any]:
        """Log what the run cost: balance before (check_credits' XCom) and after (one fresh request)."""
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

        with LocalLeadsHook() as hook:
            after = hook.get_balance()
        log.info(
            "LocalLeads credits: %d available before, %d spent by this run, %d available now; next reset %s",
            balance_before["available_credits"],
            search["spent"],
            after.available_credits,
            after.next_reset_at.date().isoformat(),
        )
        return {
            "available_before": balance_before["available_credits"],
            "spent": search["spent"],
            "available_after": after.available_credits,
        }

    # check_credits.output is its XCom (the balance dict). Passing it to report() also makes report
    # depend on check_credits; the explicit `>>` below keeps the order obvious when reading the graph.
    search = run_lead_search()
    check_credits >> search
    report(balance_before=check_credits.output, search=search)
