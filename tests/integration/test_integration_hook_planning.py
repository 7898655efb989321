"""LocalLeadsHook's credit planning against the real sandbox: require_credits and get_usage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException
from loopback_support import ConnSetter, HookFactory

from airflow_provider_localleads.estimates import CostFromHistory
from airflow_provider_localleads.exceptions import InsufficientCreditsError, NoCostHistoryError
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.models import CreditBalance, CreditUsage
from airflow_provider_localleads.operators.credits import CheckCreditsOperator
from airflow_provider_localleads.planning.check import insufficient_credits_message, shortfall_message
from airflow_provider_localleads.sandbox import BALANCE_PATH, TRANSACTIONS_PATH, SandboxServer, SandboxState

NOW = pendulum.datetime(2026, 9, 10, 12, 0, 0, tz="UTC")
SHORTFALL = (
    "Not enough LocalLeads credits: needs 120 credits, 82 available (monthly 100 + bonus 25 - used 43); "
    "next reset 2026-10-01"
)


@pytest.fixture
def doc_balance(localleads_sandbox: SandboxServer) -> SandboxServer:
    """The API documentation's balance (82 available), with a fixed billing cycle."""
    localleads_sandbox.set_balance(monthly=100, bonus=25, used=43, reset_day=1, last_reset_at="2026-09-01T00:00:00Z")
    return localleads_sandbox


# ------------------------------------------------------------------------------------------ require_credits


@pytest.mark.parametrize("cost", [0, 50, 82])
def test_require_credits_returns_the_balance_when_it_covers_the_cost(
    doc_balance: SandboxServer, sandbox_hook: LocalLeadsHook, cost: int
) -> None:
    balance = sandbox_hook.require_credits(cost)

    assert balance == CreditBalance.from_api(doc_balance.balance())
    assert balance.available_credits == 82
    assert doc_balance.request_count() == doc_balance.request_count(BALANCE_PATH) == 1


def test_require_credits_fails_without_retry_with_the_operators_message(
    doc_balance: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    with pytest.raises(InsufficientCreditsError) as from_hook:
        sandbox_hook.require_credits(120)
    with pytest.raises(InsufficientCreditsError) as from_operator:
        CheckCreditsOperator(task_id="check", estimated_cost=120, localleads_conn_id="ll_sandbox").execute({})

    assert isinstance(from_hook.value, AirflowFailException)
    assert str(from_hook.value) == str(from_operator.value)
    assert str(from_hook.value) == (
        f"{SHORTFALL}. Top up, lower estimated_cost, wait for the reset, or use on_insufficient='skip' "
        "(or CreditsSensor) to skip/wait instead of failing"
    )
    balance = CreditBalance.from_api(doc_balance.balance())
    assert str(from_hook.value) == insufficient_credits_message(120, balance)
    assert doc_balance.request_count(BALANCE_PATH) == 2  # one each


def test_require_credits_skip_raises_airflow_skip_with_the_shortfall(
    doc_balance: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    with pytest.raises(AirflowSkipException) as caught:
        sandbox_hook.require_credits(120, on_insufficient="skip")

    assert not isinstance(caught.value, AirflowFailException)
    assert str(caught.value) == SHORTFALL == shortfall_message(120, CreditBalance.from_api(doc_balance.balance()))
    assert doc_balance.request_count() == 1


def test_require_credits_sees_an_overdrawn_account_as_short(
    doc_balance: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    doc_balance.set_balance(used=130)  # -5 available
    with pytest.raises(InsufficientCreditsError, match="needs 0 credits, -5 available"):
        sandbox_hook.require_credits(0)


@pytest.mark.parametrize("on_insufficient", ["ignore", "FAIL", None, "", "warn"])
def test_require_credits_refuses_an_unknown_mode_before_any_request(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook, on_insufficient: Any
) -> None:
    with pytest.raises(ValueError, match=f"on_insufficient must be 'fail' or 'skip', got {on_insufficient!r}"):
        sandbox_hook.require_credits(10, on_insufficient=on_insufficient)
    assert localleads_sandbox.request_count() == 0


@pytest.mark.parametrize("cost", [-1, True, "5", 1.5, None])
def test_require_credits_refuses_a_cost_that_is_not_a_whole_number(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook, cost: Any
) -> None:
    with pytest.raises(ValueError, match=r"cost must be a whole number of credits >= 0, got .*CostFromHistory"):
        sandbox_hook.require_credits(cost)
    assert localleads_sandbox.request_count() == 0


def roofer_runs(sandbox: SandboxServer) -> str:
    """Two recent 'Lead search: Roofers*' runs of 30 and 40 credits; returns the day of the older one."""
    now = datetime.now(UTC).replace(microsecond=0)
    for minutes, amount in ((20, -30), (10, -40)):
        sandbox.add_transaction(
            "DEDUCTION", amount, "Lead search: Roofers in Reno, NV", now - timedelta(minutes=minutes)
        )
    return (now - timedelta(minutes=20)).date().isoformat()


def test_require_credits_resolves_a_cost_from_history_and_logs_it_like_the_operator(
    doc_balance: SandboxServer, sandbox_hook: LocalLeadsHook, caplog: pytest.LogCaptureFixture, capsys: Any
) -> None:
    day = roofer_runs(doc_balance)

    with caplog.at_level("INFO"):
        balance = sandbox_hook.require_credits(CostFromHistory("Lead search: Roofers*"))  # 48 of 82

    assert balance == CreditBalance.from_api(doc_balance.balance())
    line = f"Estimated cost: max of 2 runs since {day} matching 'Lead search: Roofers*' is 40 credits, +20% = 48"
    # The hook's log: structlog prints on Airflow 3, stdlib logging on 2.11.
    logged = capsys.readouterr().out + caplog.text
    assert line in logged
    assert f"Enough LocalLeads credits: needs 48, {balance.summary()}" in logged  # the operator's line
    assert [r.path for r in doc_balance.requests] == [TRANSACTIONS_PATH, BALANCE_PATH]  # one page, one balance


def test_require_credits_with_a_cost_from_history_that_is_too_high_fails_or_skips_as_the_operator_does(
    doc_balance: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    roofer_runs(doc_balance)
    cost = CostFromHistory("Lead search: Roofers*", margin=1.1)  # ceil(40 * 2.1) = 84, 82 available
    operator = CheckCreditsOperator(task_id="check", estimated_cost=cost, localleads_conn_id="ll_sandbox")

    with pytest.raises(InsufficientCreditsError) as from_hook:
        sandbox_hook.require_credits(cost)
    with pytest.raises(InsufficientCreditsError) as from_operator:
        operator.execute({"ti": _NoXCom()})
    with pytest.raises(AirflowSkipException) as skipped:
        sandbox_hook.require_credits(cost, on_insufficient="skip")

    assert str(from_hook.value) == str(from_operator.value)
    balance = CreditBalance.from_api(doc_balance.balance())
    assert str(from_hook.value) == insufficient_credits_message(84, balance)
    assert str(skipped.value) == shortfall_message(84, balance)


def test_require_credits_checks_its_arguments_before_reading_the_history(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    with pytest.raises(ValueError, match="require_credits: on_insufficient must be 'fail' or 'skip', got 'skp'"):
        sandbox_hook.require_credits(CostFromHistory("Lead search: *"), on_insufficient="skp")
    assert localleads_sandbox.request_count() == 0


def test_require_credits_without_a_matching_history_fails_before_reading_the_balance(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    with pytest.raises(NoCostHistoryError, match="matching 'Lead search: Astronauts\\*'"):
        sandbox_hook.require_credits(CostFromHistory("Lead search: Astronauts*"))
    assert localleads_sandbox.request_count(BALANCE_PATH) == 0
    with pytest.raises(InsufficientCreditsError, match="needs 500 credits"):
        sandbox_hook.require_credits(CostFromHistory("Lead search: Astronauts*", default=500))


class _NoXCom:
    def xcom_push(self, key: str, value: Any) -> None:
        pass


# ------------------------------------------------------------------------------------------ get_usage


@pytest.fixture
def cycle(set_conn: ConnSetter, make_hook: HookFactory) -> Iterator[tuple[SandboxServer, LocalLeadsHook]]:
    """30 of 100 credits left on NOW, the reset on the 15th, and an empty history to fill."""
    state = SandboxState(
        monthly_credits=100,
        bonus_credits=0,
        used_credits=70,
        reset_day=15,
        last_reset_at="2026-08-15T00:00:00Z",
        seed_transactions=0,
        clock=lambda: NOW,
    )
    with SandboxServer(state=state) as server:
        set_conn("ll_cycle", host=server.url, password=server.api_key)
        yield server, make_hook("ll_cycle")


def _spend_300_in_30_days(sandbox: SandboxServer) -> None:
    """Ten deductions of 30 in the window, plus what must not count: older ones, top-ups, resets."""
    for day in range(1, 30, 3):  # 1, 4, ..., 28 days ago
        sandbox.add_transaction("DEDUCTION", -30, "Lead search: Dentists", NOW - timedelta(days=day))
    sandbox.add_transaction("TOP_UP", 50, "Coupon", NOW - timedelta(days=2))
    sandbox.add_transaction("MONTHLY_RESET", 100, "Monthly credit reset", NOW - timedelta(days=26))
    sandbox.add_transaction("DEDUCTION", -500, "Lead search: long ago", NOW - timedelta(days=30, seconds=1))


def test_get_usage_when_credits_run_out_before_the_reset(cycle: tuple[SandboxServer, LocalLeadsHook]) -> None:
    sandbox, hook = cycle
    _spend_300_in_30_days(sandbox)

    usage = hook.get_usage(30, now=NOW)

    assert usage == CreditUsage(
        spent=300,
        per_day=10.0,
        deductions=10,
        since=NOW - timedelta(days=30),
        next_reset_at=pendulum.datetime(2026, 9, 15, tz="UTC"),
        runs_out_at=NOW + timedelta(days=3),  # 30 available at 10 a day
        days=30,
        available_credits=30,
    )
    assert usage.summary() == (
        "at the last 30 days' rate (10.0/day) these 30 credits last until 2026-09-13, 1 day before the reset on "
        "2026-09-15"
    )
    assert isinstance(usage.runs_out_at, pendulum.DateTime)
    assert sandbox.request_count(BALANCE_PATH) == 1
    assert sandbox.request_count(TRANSACTIONS_PATH) == 1


def test_get_usage_when_credits_last_until_the_reset(cycle: tuple[SandboxServer, LocalLeadsHook]) -> None:
    sandbox, hook = cycle
    _spend_300_in_30_days(sandbox)
    sandbox.set_balance(used=0)  # 100 available: 10 days at 10 a day, past the reset in 4.5

    usage = hook.get_usage(30, now=NOW)

    assert (usage.spent, usage.per_day, usage.runs_out_at, usage.available_credits) == (300, 10.0, None, 100)
    assert (
        usage.summary() == "at the last 30 days' rate (10.0/day) these 100 credits last until the reset on 2026-09-15"
    )


def test_get_usage_over_a_shorter_window(cycle: tuple[SandboxServer, LocalLeadsHook]) -> None:
    sandbox, hook = cycle
    _spend_300_in_30_days(sandbox)

    usage = hook.get_usage(7, now=NOW)  # deductions 1, 4 and 7 days ago: the window's start is inside

    assert (usage.spent, usage.deductions, usage.since) == (90, 3, NOW - timedelta(days=7))
    assert usage.per_day == pytest.approx(90 / 7)
    assert usage.runs_out_at == NOW + timedelta(seconds=30 * 7 * 86_400 / 90)  # 2.33 days: Sept 12, 20:00
    assert usage.summary() == (
        "at the last 7 days' rate (12.9/day) these 30 credits last until 2026-09-12, 2 days before the reset on "
        "2026-09-15"
    )
    sandbox.set_balance(used=50)  # 50 left: 3.89 days, Sept 14 at 09:20, under a day before the reset
    assert (
        hook.get_usage(7, now=NOW)
        .summary()
        .endswith("these 50 credits last until 2026-09-14, less than a day before the reset on 2026-09-15")
    )


def test_get_usage_with_nothing_spent(cycle: tuple[SandboxServer, LocalLeadsHook]) -> None:
    sandbox, hook = cycle
    sandbox.add_transaction("TOP_UP", 50, "Coupon", NOW - timedelta(days=2))

    usage = hook.get_usage(now=NOW)

    assert (usage.spent, usage.per_day, usage.deductions, usage.runs_out_at, usage.days) == (0, 0.0, 0, None, 30)
    assert (
        usage.summary() == "nothing was spent in the last 30 days: these 30 credits last until the reset on 2026-09-15"
    )


def test_get_usage_with_no_credits_left(cycle: tuple[SandboxServer, LocalLeadsHook]) -> None:
    sandbox, hook = cycle
    _spend_300_in_30_days(sandbox)
    sandbox.set_balance(used=104)  # -4 available

    usage = hook.get_usage(30, now=NOW)

    assert usage.runs_out_at == NOW
    assert usage.summary() == "no credits are left (-4 available) until the reset on 2026-09-15"


def test_get_usage_to_dict_is_json_safe(cycle: tuple[SandboxServer, LocalLeadsHook]) -> None:
    sandbox, hook = cycle
    _spend_300_in_30_days(sandbox)

    as_dict = hook.get_usage(30, now=NOW).to_dict()

    assert (
        json.loads(json.dumps(as_dict))
        == as_dict
        == {
            "spent": 300,
            "per_day": 10.0,
            "deductions": 10,
            "since": "2026-08-11T12:00:00Z",
            "next_reset_at": "2026-09-15T00:00:00Z",
            "runs_out_at": "2026-09-13T12:00:00Z",
            "days": 30,
            "available_credits": 30,
        }
    )
    sandbox.set_balance(used=0)
    assert hook.get_usage(30, now=NOW).to_dict()["runs_out_at"] is None


def test_get_usage_reads_only_the_pages_of_its_window(set_conn: ConnSetter, make_hook: HookFactory) -> None:
    # 3,000 transactions, one a minute back from NOW. One day holds k = 0..1440 minutes ago; the first
    # older one is the 1,442nd listed. Pages hold 100, then 98 new each: 100 + 98 * 14 = 1,472 >= 1,442.
    with SandboxServer(state=SandboxState(seed_transactions=3000, clock=lambda: NOW)) as sandbox:
        set_conn("ll_long", host=sandbox.url, password=sandbox.api_key)
        in_window = [t for t in sandbox.state.all_transactions()[:1441] if t["type"] == "DEDUCTION"]

        usage = make_hook("ll_long").get_usage(1, now=NOW)

        assert (usage.deductions, usage.spent) == (len(in_window), sum(-t["amount"] for t in in_window))
        pages = [r.query for r in sandbox.requests if r.path == TRANSACTIONS_PATH]
        assert [int(page["offset"]) for page in pages] == [98 * i for i in range(15)]
        assert int(pages[-1]["offset"]) + int(pages[-1]["limit"]) < 3000  # stopped well before the end
        assert sandbox.request_count(BALANCE_PATH) == 1
        # The whole listing, for comparison: 31 pages (100, then 98 new each).
        assert len(list(make_hook("ll_long").iter_transactions())) == 3000
        assert sandbox.request_count(TRANSACTIONS_PATH) == 15 + 31


@pytest.mark.parametrize("days", [0, -1, True, 1.5, "30", None])
def test_get_usage_refuses_a_bad_window_before_any_request(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook, days: Any
) -> None:
    with pytest.raises(ValueError, match="days must be a whole number of days >= 1"):
        sandbox_hook.get_usage(days)
    assert localleads_sandbox.request_count() == 0


def test_get_usage_refuses_a_naive_now(localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook) -> None:
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        sandbox_hook.get_usage(now=datetime(2026, 9, 10))
    assert localleads_sandbox.request_count() == 0


def test_get_usage_defaults_to_the_last_30_days_until_now(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    before = pendulum.now("UTC")
    usage = sandbox_hook.get_usage()
    after = pendulum.now("UTC")

    assert before - timedelta(days=30) <= usage.since <= after - timedelta(days=30)
    assert usage.days == 30
    in_window = [
        t
        for t in localleads_sandbox.state.all_transactions()
        if t["type"] == "DEDUCTION" and pendulum.parse(t["createdAt"]) >= usage.since
    ]
    assert (usage.spent, usage.deductions) == (sum(-t["amount"] for t in in_window), len(in_window))
