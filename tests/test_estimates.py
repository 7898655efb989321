"""CostFromHistory against the real sandbox: matching, statistics, margin, window, paging, templating.

Every history here has explicit timestamps and every estimate an explicit ``now``, so dates in the
assertions are exact and nothing depends on the wall clock.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_localleads.estimates import STATISTICS, CostEstimate, CostFromHistory, resolve_cost
from airflow_provider_localleads.exceptions import (
    LocalLeadsError,
    LocalLeadsInvalidArgumentError,
    NoCostHistoryError,
)
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.sandbox import TRANSACTIONS_PATH, SandboxServer, SandboxState

NOW = pendulum.datetime(2026, 9, 10, 12, 0, 0, tz="UTC")
DENTISTS = "Lead search: Dentists*"
CONN_ID = "ll_estimates"


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    """A sandbox with an empty history whose clock stands at NOW; ``CONN_ID`` points at it."""
    state = SandboxState(seed_transactions=0, clock=lambda: NOW)
    with SandboxServer(state=state) as server:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", server.connection_json(extra={"max_retries": 0}))
        yield server


@pytest.fixture
def hook(sandbox: SandboxServer) -> Iterator[LocalLeadsHook]:
    with LocalLeadsHook(CONN_ID) as hook:
        yield hook


Add = Callable[..., dict[str, Any]]


@pytest.fixture
def add(sandbox: SandboxServer) -> Add:
    """``add(cost, description, days_ago=..., type=...)``: one history entry at NOW minus that age."""

    def add(
        cost: int, description: str = "Lead search: Dentists in Austin, TX (97 results)", *, days_ago: float = 1,
        type: str = "DEDUCTION",
    ) -> dict[str, Any]:  # fmt: skip
        amount = -cost if type == "DEDUCTION" else cost
        return sandbox.add_transaction(type, amount, description, NOW - timedelta(days=days_ago))

    return add


def transaction_requests(sandbox: SandboxServer) -> int:
    return sandbox.request_count(TRANSACTIONS_PATH)


# ------------------------------------------------------------------------------------------ matching


def test_max_of_matching_deductions_plus_margin(sandbox: SandboxServer, hook: LocalLeadsHook, add: Add) -> None:
    add(12, days_ago=1)
    add(30, "Lead search: Plumbers in Denver, CO (240 results)", days_ago=2)  # another search
    add(9, "Lead search: Dentists in Boise, ID (70 results)", days_ago=3)
    add(5, "Lead search: Dentists refund", days_ago=4, type="TOP_UP")  # matches, but not a deduction
    add(100, "Monthly credit reset", days_ago=5, type="MONTHLY_RESET")
    add(10, days_ago=7)

    estimate = CostFromHistory(DENTISTS).estimate(hook, now=NOW)

    assert estimate == CostEstimate(
        cost=15,  # ceil(12 * 1.2) = ceil(14.4)
        pattern=DENTISTS,
        statistic="max",
        runs_used=3,
        since=NOW - timedelta(days=7),
        basis_value=12,
        margin=0.2,
        from_default=False,
    )
    assert (
        estimate.describe()
        == "max of 3 runs since 2026-09-03 matching 'Lead search: Dentists*' is 12 credits, +20% = 15"
    )
    assert isinstance(estimate.since, pendulum.DateTime)
    assert estimate.since.utcoffset() == timedelta(0)


def test_the_whole_description_must_match_and_case_matters(hook: LocalLeadsHook, add: Add) -> None:
    add(12, "Lead search: Dentists in Austin, TX (97 results)")
    add(7, "Email enrichment: Lead search: Dentists list", days_ago=2)  # contains the text, not at the start

    assert CostFromHistory(DENTISTS, margin=0).estimate(hook, now=NOW).runs_used == 1
    assert CostFromHistory("Lead search: Dentists", default=0).estimate(hook, now=NOW).from_default  # no '*'
    assert CostFromHistory("lead search: dentists*", default=0).estimate(hook, now=NOW).from_default  # case
    assert CostFromHistory("Lead search: [Dd]entists*", margin=0).estimate(hook, now=NOW).cost == 12
    assert CostFromHistory("*Dentists*", margin=0).estimate(hook, now=NOW).runs_used == 2
    assert CostFromHistory("Lead search: Dentists in ??????, TX *", margin=0).estimate(hook, now=NOW).runs_used == 1


def test_the_api_documentation_example(localleads_sandbox: SandboxServer, localleads_sandbox_connection: str) -> None:
    """The default sandbox history (the API doc's balance and its 'Dentists in Austin' search)."""
    newest = pendulum.parse(localleads_sandbox.state.all_transactions()[0]["createdAt"])
    with LocalLeadsHook(localleads_sandbox_connection) as hook:
        estimate = CostFromHistory(DENTISTS).estimate(hook, now=newest)

    day = estimate.since.date().isoformat()
    assert (estimate.cost, estimate.runs_used, estimate.basis_value) == (15, 1, 12)
    assert estimate.describe() == f"max of 1 run since {day} matching 'Lead search: Dentists*' is 12 credits, +20% = 15"


# ------------------------------------------------------------------------------------------ statistics and margin


def test_mean(hook: LocalLeadsHook, add: Add) -> None:
    for age, cost in enumerate((10, 11, 13), start=1):
        add(cost, days_ago=age)

    estimate = CostFromHistory(DENTISTS, statistic="mean").estimate(hook, now=NOW)

    assert estimate.basis_value == pytest.approx(34 / 3)
    assert estimate.cost == 14  # ceil(34/3 * 1.2) = ceil(13.6)
    assert estimate.describe() == (
        "mean of 3 runs since 2026-09-07 matching 'Lead search: Dentists*' is 11.33 credits, +20% = 14"
    )


@pytest.mark.parametrize(
    ("costs", "expected"),
    [
        (list(range(1, 11)), 9),  # 10 runs: the 9th smallest
        (list(range(1, 21)), 18),  # 20 runs: the 18th
        ([5, 50, 6, 7, 8], 50),  # fewer than 10 runs: the max
        ([4], 4),
        ([10] * 9 + [100], 10),  # one outlier in ten is ignored
        ([10] * 8 + [100, 100], 100),  # two are not
    ],
)
def test_p90_is_the_nearest_rank(hook: LocalLeadsHook, add: Add, costs: list[int], expected: int) -> None:
    for age, cost in enumerate(costs, start=1):
        add(cost, days_ago=age * 0.1)

    estimate = CostFromHistory(DENTISTS, runs=50, statistic="p90", margin=0).estimate(hook, now=NOW)

    assert (estimate.basis_value, estimate.cost, estimate.runs_used) == (expected, expected, len(costs))
    assert estimate.describe().startswith(f"p90 of {len(costs)} run")


@pytest.mark.parametrize(
    ("margin", "cost", "tail"),
    [
        (0.1, 110, "is 100 credits, +10% = 110"),  # exact: in floats 100 * 1.1 is 110.00000000000001
        (0, 100, "is 100 credits (no margin)"),
        (0.0, 100, "is 100 credits (no margin)"),
        (0.125, 113, "is 100 credits, +12.5% = 113"),  # ceil(112.5)
        (1, 200, "is 100 credits, +100% = 200"),
        (0.07, 107, "is 100 credits, +7% = 107"),
    ],
)
def test_margin_is_applied_exactly(hook: LocalLeadsHook, add: Add, margin: float, cost: int, tail: str) -> None:
    for age in range(1, 11):
        add(100, days_ago=age)

    estimate = CostFromHistory(DENTISTS, margin=margin).estimate(hook, now=NOW)

    assert estimate.cost == cost
    assert estimate.margin == float(margin)
    assert estimate.describe().endswith(tail)


@pytest.mark.parametrize(("cost", "expected"), [(100, 110), (200, 220), (90, 99), (30, 33)])
def test_a_margin_of_a_tenth_adds_exactly_a_tenth(hook: LocalLeadsHook, add: Add, cost: int, expected: int) -> None:
    """In floats 100 * (1 + 0.1) is 110.00000000000001 (200: 220.00000000000003, 90: 99.00000000000001),
    so a naive ceil would charge 111 (221, 100)."""
    add(cost)
    for statistic in STATISTICS:
        assert CostFromHistory(DENTISTS, statistic=statistic, margin=0.1).estimate(hook, now=NOW).cost == expected


# ------------------------------------------------------------------------------------------ window: lookback and runs


def test_lookback_leaves_out_older_runs(hook: LocalLeadsHook, add: Add) -> None:
    add(10, days_ago=1)
    add(20, days_ago=30)  # exactly at the window's start: inside
    add(99, days_ago=30.001)  # just outside
    add(99, days_ago=60)

    estimate = CostFromHistory(DENTISTS, lookback=timedelta(days=30)).estimate(hook, now=NOW)

    assert (estimate.runs_used, estimate.basis_value, estimate.cost) == (2, 20, 24)
    assert estimate.since == NOW - timedelta(days=30)


def test_runs_caps_the_estimate_at_the_newest_runs(hook: LocalLeadsHook, add: Add) -> None:
    for age in range(1, 16):  # newest first: 1, 2, ..., 15 credits
        add(age, days_ago=age)

    estimate = CostFromHistory(DENTISTS, runs=5, margin=0).estimate(hook, now=NOW)

    assert (estimate.runs_used, estimate.basis_value, estimate.since) == (5, 5, NOW - timedelta(days=5))


def test_transactions_newer_than_now_count(hook: LocalLeadsHook, add: Add) -> None:
    """The API's clock may be ahead of the worker's: its newest runs are still the most relevant."""
    add(40, days_ago=-0.01)
    add(10, days_ago=1)

    assert CostFromHistory(DENTISTS, margin=0).estimate(hook, now=NOW).basis_value == 40


def test_now_defaults_to_the_current_time(hook: LocalLeadsHook, sandbox: SandboxServer) -> None:
    sandbox.add_transaction("DEDUCTION", -8, "Lead search: Dentists now", datetime.now(UTC) - timedelta(minutes=1))

    assert CostFromHistory(DENTISTS, margin=0).estimate(hook).cost == 8


def test_now_must_be_timezone_aware(hook: LocalLeadsHook, sandbox: SandboxServer) -> None:
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        CostFromHistory(DENTISTS).estimate(hook, now=datetime(2026, 9, 10, 12))
    assert sandbox.request_count() == 0


# ------------------------------------------------------------------------------------------ paging only as needed


@pytest.fixture
def long_history(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SandboxServer, LocalLeadsHook]]:
    """1,000 synthetic transactions, one a minute back from NOW (newest first: k minutes ago, k = 0..999)."""
    with SandboxServer(state=SandboxState(seed_transactions=1000, clock=lambda: NOW)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_LL_LONG", server.connection_json())
        with LocalLeadsHook("ll_long") as hook:
            yield server, hook


def test_runs_reached_on_the_first_page_reads_one_page(long_history: tuple[SandboxServer, LocalLeadsHook]) -> None:
    sandbox, hook = long_history

    estimate = CostFromHistory("Lead search: *", runs=5).estimate(hook, now=NOW)

    assert estimate.runs_used == 5
    assert transaction_requests(sandbox) == 1
    assert sandbox.request_count() == 1  # no balance read either


def test_lookback_stops_at_the_page_holding_the_first_older_transaction(
    long_history: tuple[SandboxServer, LocalLeadsHook],
) -> None:
    sandbox, hook = long_history
    # The window holds k = 0..250 (251 transactions); the first older one is the 252nd listed. Pages
    # hold 100, then 98 new each (iter_transactions re-reads two to prove nothing was skipped):
    # 100 + 98 + 98 = 296 >= 252, so three pages.
    in_window = [t for t in sandbox.state.all_transactions()[:251] if t["type"] == "DEDUCTION"]

    estimate = CostFromHistory("*", runs=1000, lookback=timedelta(minutes=250), margin=0).estimate(hook, now=NOW)

    assert estimate.runs_used == len(in_window) == 251
    assert estimate.basis_value == max(-t["amount"] for t in in_window)
    assert estimate.since == NOW - timedelta(minutes=250)
    assert transaction_requests(sandbox) == 3


def test_a_window_past_the_history_reads_all_of_it_once(long_history: tuple[SandboxServer, LocalLeadsHook]) -> None:
    sandbox, hook = long_history

    estimate = CostFromHistory("No such run*", default=7).estimate(hook, now=NOW)

    assert estimate.from_default
    assert transaction_requests(sandbox) == 1 + math.ceil((1000 - 100) / 98)  # the whole listing: 11


# ------------------------------------------------------------------------------------------ no match


def test_no_match_uses_the_default_as_given(sandbox: SandboxServer, hook: LocalLeadsHook, add: Add) -> None:
    add(12, "Lead search: Plumbers in Denver, CO (97 results)")
    add(50, days_ago=91)  # a match, but older than the lookback

    estimate = CostFromHistory(DENTISTS, default=40, margin=0.5).estimate(hook, now=NOW)

    assert estimate == CostEstimate(
        cost=40,
        pattern=DENTISTS,
        statistic="max",
        runs_used=0,
        since=NOW - timedelta(days=90),
        basis_value=None,
        margin=0.0,
        from_default=True,
    )
    assert estimate.describe() == (
        "no DEDUCTION since 2026-06-12 matches 'Lead search: Dentists*': using the default of 40 credits (no margin)"
    )
    assert CostFromHistory(DENTISTS, default=0).estimate(hook, now=NOW).cost == 0


def test_no_match_without_default_fails_without_retrying(hook: LocalLeadsHook, add: Add) -> None:
    add(12, "Lead search: Plumbers in Denver, CO (97 results)")

    with pytest.raises(NoCostHistoryError) as caught:
        CostFromHistory(DENTISTS, lookback=timedelta(days=30)).estimate(hook, now=NOW, task_id="check_credits")

    err = caught.value
    assert isinstance(err, AirflowFailException)  # no retry: the history will not change by retrying
    assert isinstance(err, LocalLeadsInvalidArgumentError)
    assert str(err) == (
        "Task 'check_credits': No DEDUCTION transaction in the last 30 days (since 2026-08-11) has a description "
        "matching 'Lead search: Dentists*' (the newest DEDUCTION there is 'Lead search: Plumbers in Denver, CO "
        "(97 results)'). The whole description must match, case-sensitively: add a '*' where it goes on, fix the "
        "pattern or lookback, or give CostFromHistory a default=<credits> for when there is no history yet"
    )


def test_no_history_at_all_says_so(hook: LocalLeadsHook) -> None:
    with pytest.raises(NoCostHistoryError, match=r"in the last 12 hours .*\(there is no DEDUCTION there\)"):
        CostFromHistory(DENTISTS, lookback=timedelta(hours=12)).estimate(hook, now=NOW)


# ------------------------------------------------------------------------------------------ templating


def test_match_is_rendered_by_airflow_for_each_run_from_the_template(
    sandbox: SandboxServer, hook: LocalLeadsHook, add: Add
) -> None:
    """What Airflow does per run: a shallow copy of the task (the estimate object is shared), then render."""
    from airflow.providers.common.compat.sdk import DAG

    from airflow_provider_localleads.operators.credits import CheckCreditsOperator

    add(12, "Lead search: Dentists in Austin, TX (97 results)")
    add(30, "Lead search: Plumbers in Denver, CO (240 results)", days_ago=2)
    with DAG("estimates_render", schedule=None, start_date=NOW, params={"kind": "Dentists"}):
        task = CheckCreditsOperator(
            task_id="check", estimated_cost=CostFromHistory("Lead search: {{ params.kind }}*", margin=0)
        )
    shared = task.estimated_cost

    results = {}
    for kind in ("Dentists", "Plumbers", "Dentists"):
        run_copy = copy.copy(task)
        run_copy.render_template_fields({"params": {"kind": kind}})
        assert run_copy.estimated_cost is shared  # rendered in place, on the object every run shares...
        results[kind] = resolve_cost(run_copy.estimated_cost, hook, "check", now=NOW)
        assert shared.match == "Lead search: {{ params.kind }}*"  # ... which keeps its template

    assert results["Dentists"][0] == 12
    assert results["Plumbers"][0] == 30
    assert results["Plumbers"][1] is not None
    assert results["Plumbers"][1].pattern == "Lead search: Plumbers*"
    assert repr(shared) == (
        "CostFromHistory(match='Lead search: {{ params.kind }}*', rendered='Lead search: Dentists*', runs=10, "
        "lookback=datetime.timedelta(days=90), statistic='max', margin=0.0, default=None)"
    )


@pytest.mark.parametrize("rendered", ["", 42, None, "Lead search: {{ params.kind }}*"])
def test_a_match_that_is_not_a_pattern_fails_before_any_request(
    sandbox: SandboxServer, hook: LocalLeadsHook, rendered: object
) -> None:
    estimate_from = CostFromHistory("Lead search: {{ params.kind }}*")
    estimate_from.match = rendered  # what Airflow assigns after rendering (None: never rendered)

    with pytest.raises(LocalLeadsInvalidArgumentError, match="match must render to a non-empty shell-style pattern"):
        estimate_from.estimate(hook, now=NOW, task_id="check")
    assert sandbox.request_count() == 0


def test_a_plain_pattern_needs_no_rendering(hook: LocalLeadsHook, add: Add) -> None:
    add(12)
    plain = CostFromHistory(DENTISTS)
    assert plain.rendered_match is None
    assert plain.estimate(hook, now=NOW).pattern == DENTISTS
    assert "rendered=" not in repr(plain)


# ------------------------------------------------------------------------------------------ resolve_cost and XCom


@pytest.mark.parametrize(("value", "cost"), [(50, 50), ("50", 50), (" 7 ", 7), (0, 0)])
def test_resolve_cost_takes_a_number_without_any_request(
    sandbox: SandboxServer, hook: LocalLeadsHook, value: object, cost: int
) -> None:
    assert resolve_cost(value, hook, "check") == (cost, None)
    assert sandbox.request_count() == 0


@pytest.mark.parametrize("value", ["abc", "-5", "1.5", True, -1, None])
def test_resolve_cost_refuses_what_is_not_a_cost(sandbox: SandboxServer, hook: LocalLeadsHook, value: object) -> None:
    with pytest.raises(LocalLeadsInvalidArgumentError, match="Task 'check': estimated_cost must render"):
        resolve_cost(value, hook, "check")
    assert sandbox.request_count() == 0


def test_resolve_cost_estimates_a_cost_from_history(hook: LocalLeadsHook, add: Add) -> None:
    add(12)
    cost, estimate = resolve_cost(CostFromHistory(DENTISTS), hook, "check", now=NOW)
    assert estimate is not None
    assert (cost, estimate.cost) == (15, 15)


def test_to_dict_is_json_safe_and_carries_the_basis(hook: LocalLeadsHook, add: Add) -> None:
    add(12, days_ago=1)
    add(10, days_ago=3)
    estimate = CostFromHistory(DENTISTS, statistic="mean").estimate(hook, now=NOW)

    as_dict = estimate.to_dict()

    assert (
        json.loads(json.dumps(as_dict))
        == as_dict
        == {
            "cost": 14,  # ceil(11 * 1.2) = ceil(13.2)
            "pattern": DENTISTS,
            "statistic": "mean",
            "runs_used": 2,
            "since": "2026-09-07T12:00:00Z",
            "basis_value": 11,
            "margin": 0.2,
            "from_default": False,
            "description": "mean of 2 runs since 2026-09-07 matching 'Lead search: Dentists*' is 11 credits, +20% = 14",
        }
    )
    default = CostFromHistory("none*", default=3).estimate(hook, now=NOW).to_dict()
    assert json.loads(json.dumps(default)) == default
    assert (default["basis_value"], default["from_default"], default["since"]) == (None, True, "2026-06-12T12:00:00Z")


# ------------------------------------------------------------------------------------------ validation at parse time


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"match": ""}, "match must be a non-empty shell-style pattern"),
        ({"match": None}, "match must be a non-empty shell-style pattern"),
        ({"match": 5}, "match must be a non-empty shell-style pattern"),
        ({"runs": 0}, r"runs must be a whole number >= 1 \(e.g. runs=10\), got 0"),
        ({"runs": True}, "runs must be a whole number >= 1"),
        ({"runs": 2.5}, "runs must be a whole number >= 1"),
        ({"runs": "10"}, "runs must be a whole number >= 1"),
        ({"lookback": timedelta(0)}, r"lookback must be a positive timedelta \(e.g. timedelta\(days=90\)\)"),
        ({"lookback": timedelta(days=-1)}, "lookback must be a positive timedelta"),
        ({"lookback": 90}, "lookback must be a positive timedelta"),
        ({"statistic": "median"}, "statistic must be 'max', 'mean' or 'p90', got 'median'"),
        ({"statistic": "MAX"}, "statistic must be 'max', 'mean' or 'p90'"),
        ({"margin": -0.1}, r"margin must be a number >= 0, a fraction of the estimate \(0.2 = \+20%"),
        ({"margin": True}, "margin must be a number >= 0"),
        ({"margin": "0.2"}, "margin must be a number >= 0"),
        ({"margin": float("nan")}, "margin must be a number >= 0"),
        ({"margin": float("inf")}, "margin must be a number >= 0"),
        ({"default": -1}, r"default must be None \(fail when no run matches\) or a whole number of credits >= 0"),
        ({"default": True}, "default must be None"),
        ({"default": 1.5}, "default must be None"),
        ({"default": "10"}, "default must be None"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    """At DAG-parse time, with no connection and no sandbox: construction never touches the network."""
    arguments: dict[str, Any] = {"match": DENTISTS, **kwargs}
    with pytest.raises(ValueError, match=message) as caught:
        CostFromHistory(**arguments)
    assert str(caught.value).startswith("CostFromHistory: ")
    assert not isinstance(caught.value, LocalLeadsError)


def test_good_arguments_are_kept() -> None:
    estimate_from = CostFromHistory(
        DENTISTS, runs=3, lookback=pendulum.duration(days=7), statistic="p90", margin=1, default=0
    )
    assert (estimate_from.match, estimate_from.runs, estimate_from.statistic) == (DENTISTS, 3, "p90")
    assert (estimate_from.lookback, estimate_from.margin, estimate_from.default) == (timedelta(days=7), 1.0, 0)
    assert type(estimate_from.margin) is float
