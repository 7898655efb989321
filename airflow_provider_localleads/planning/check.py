"""The credit check's words and outcome, one wording for the operator, the sensor and require_credits, so
a pre-flight task and the paid task that checks for itself fail with the same message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import AirflowSkipException

from airflow_provider_localleads.client.values import python_whole_number
from airflow_provider_localleads.estimates import CostFromHistory
from airflow_provider_localleads.exceptions import InsufficientCreditsError
from airflow_provider_localleads.planning.arguments import check_on_insufficient

if TYPE_CHECKING:
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
    from airflow_provider_localleads.models import CreditBalance, CreditUsage


def with_forecast(text: str, forecast: CreditUsage | None) -> str:
    return text if forecast is None else f"{text}; {forecast.summary()}"


def timeout_message(cost: int | None, last: CreditBalance | None) -> str:
    seen = f"last seen: {last.summary()}" if last is not None else "no balance could be read"
    return f"Timed out waiting for {'' if cost is None else f'{cost} '}LocalLeads credits ({seen})"


def enough_message(cost: int, balance: CreditBalance, forecast: CreditUsage | None = None) -> str:
    return with_forecast(f"Enough LocalLeads credits: needs {cost}, {balance.summary()}", forecast)


def waiting_message(cost: int, balance: CreditBalance) -> str:
    """The sensor's line while it waits (never with a forecast: that would cost requests at every poke)."""
    return f"Waiting for LocalLeads credits: needs {cost}, {balance.summary()}"


def shortfall_message(cost: int, balance: CreditBalance, forecast: CreditUsage | None = None) -> str:
    return with_forecast(f"Not enough LocalLeads credits: needs {cost} credits, {balance.summary()}", forecast)


def insufficient_credits_message(cost: int, balance: CreditBalance, forecast: CreditUsage | None = None) -> str:
    return (
        f"{shortfall_message(cost, balance, forecast)}. Top up, lower estimated_cost, wait for the reset, or use "
        "on_insufficient='skip' (or CreditsSensor) to skip/wait instead of failing"
    )


def required_cost(hook: LocalLeadsHook, cost: object, on_insufficient: object) -> int:
    """require_credits' cost, its arguments checked before any request; an estimate is logged as the operator does."""
    check_on_insufficient(on_insufficient, owner="require_credits")
    if isinstance(cost, CostFromHistory):
        estimate = cost.estimate(hook)
        hook.log.info("Estimated cost: %s", estimate.describe())
        return estimate.cost
    credits = python_whole_number(cost)
    if credits is None or credits < 0:
        raise ValueError(
            f"require_credits: cost must be a whole number of credits >= 0, got {cost!r} ({type(cost).__name__}); "
            "for a cost from the history pass a CostFromHistory(...)"
        )
    return credits


def enforce_credits(balance: CreditBalance, cost: int, on_insufficient: str) -> None:
    if balance.can_afford(cost):
        return
    if on_insufficient == "skip":
        raise AirflowSkipException(shortfall_message(cost, balance))
    raise InsufficientCreditsError(insufficient_credits_message(cost, balance))
