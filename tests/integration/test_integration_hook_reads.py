"""LocalLeadsHook against the real sandbox: balance, transaction pages, full listings, test_connection."""

from __future__ import annotations

import calendar
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback_support import FAST, ConnSetter, HookFactory, closed_port

from airflow_provider_localleads.exceptions import LocalLeadsResponseError
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.models import CreditBalance, CreditTransaction, TransactionPage
from airflow_provider_localleads.sandbox import BALANCE_PATH, TRANSACTIONS_PATH, SandboxServer, SandboxState


def _expected_balance(sandbox: SandboxServer) -> CreditBalance:
    return CreditBalance.from_api(sandbox.balance())


def _assert_next_reset_sane(balance: CreditBalance) -> None:
    nxt = balance.next_reset_at
    assert nxt.tzinfo is not None
    assert nxt.utcoffset() == timedelta(0)
    assert balance.last_reset_at < nxt <= balance.last_reset_at + timedelta(days=31)
    assert nxt.day == min(balance.reset_day, calendar.monthrange(nxt.year, nxt.month)[1])


def _ids(items: Any) -> list[str]:
    return [t["id"] if isinstance(t, dict) else t.id for t in items]


# ------------------------------------------------------------------------------------------ get_balance


def test_get_balance_matches_sandbox_state(localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook) -> None:
    balance = sandbox_hook.get_balance()

    assert isinstance(balance, CreditBalance)
    assert balance == _expected_balance(localleads_sandbox)
    assert (balance.monthly_credits, balance.bonus_credits, balance.used_credits) == (100, 25, 43)
    assert balance.available_credits == 82 == localleads_sandbox.state.available_credits
    assert balance.last_reset_at == localleads_sandbox.state.last_reset_at
    _assert_next_reset_sane(balance)
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1
    assert all(r.auth_valid for r in localleads_sandbox.requests)


def test_get_balance_follows_spend_top_up_and_reset(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    localleads_sandbox.set_balance(monthly=100, bonus=25, used=10)
    assert sandbox_hook.get_balance().available_credits == 115

    localleads_sandbox.spend(30)
    after_spend = sandbox_hook.get_balance()
    assert (after_spend.used_credits, after_spend.available_credits) == (40, 85)

    localleads_sandbox.top_up(20)
    after_top_up = sandbox_hook.get_balance()
    assert (after_top_up.bonus_credits, after_top_up.available_credits) == (45, 105)

    # Bonus credits are spent first and carry forward: 45 bonus - 40 used = 5 left; used back to 0.
    localleads_sandbox.reset_month(at="2026-06-01T00:00:00Z")
    after_reset = sandbox_hook.get_balance()
    assert after_reset == _expected_balance(localleads_sandbox)
    assert (after_reset.monthly_credits, after_reset.bonus_credits, after_reset.used_credits) == (100, 5, 0)
    assert after_reset.available_credits == 105
    assert after_reset.last_reset_at == datetime(2026, 6, 1, tzinfo=UTC)
    assert after_reset.next_reset_at == datetime(2026, 7, 1, tzinfo=UTC)
    assert localleads_sandbox.request_count(BALANCE_PATH) == 4


def test_next_reset_clamps_to_short_months(localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook) -> None:
    localleads_sandbox.set_balance(reset_day=31, last_reset_at="2026-01-31T00:00:00Z")
    balance = sandbox_hook.get_balance()
    assert balance.reset_day == 31
    assert balance.next_reset_at == datetime(2026, 2, 28, tzinfo=UTC)
    _assert_next_reset_sane(balance)
    assert balance.to_dict()["next_reset_at"] == "2026-02-28T00:00:00Z"


def test_negative_available_credits_are_reported_not_refused(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    localleads_sandbox.set_balance(monthly=10, bonus=0, used=25)
    balance = sandbox_hook.get_balance()
    assert balance.available_credits == -15
    assert not balance.can_afford(0)


# ------------------------------------------------------------------------------------ list_transactions


def test_list_transactions_page_meta_and_items(localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook) -> None:
    everything = localleads_sandbox.state.all_transactions()
    assert len(everything) >= 5

    page = sandbox_hook.list_transactions(limit=3, offset=2)

    assert isinstance(page, TransactionPage)
    assert (page.total, page.limit, page.offset) == (len(everything), 3, 2)
    assert page.items == tuple(CreditTransaction.from_api(t) for t in everything[2:5])
    assert all(isinstance(t, CreditTransaction) and t.created_at.tzinfo is not None for t in page.items)
    times = [t.created_at for t in page.items]
    assert times == sorted(times, reverse=True)  # newest first
    assert page.has_more == (len(everything) > 5)
    assert localleads_sandbox.requests[-1].query == {"limit": "3", "offset": "2"}


def test_list_transactions_defaults_and_past_the_end(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    total = localleads_sandbox.state.transaction_count
    first = sandbox_hook.list_transactions()
    assert (first.limit, first.offset, first.total) == (50, 0, total)
    assert _ids(first.items) == _ids(localleads_sandbox.state.all_transactions())

    beyond = sandbox_hook.list_transactions(limit=10, offset=total + 5)
    assert beyond.items == ()
    assert beyond.total == total
    assert not beyond.has_more


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": "5"}, "limit"),
        ({"limit": 5.0}, "limit"),
        ({"limit": None}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": True}, "offset"),
        ({"offset": "0"}, "offset"),
    ],
)
def test_list_transactions_rejects_bad_arguments_before_any_request(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook, kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        sandbox_hook.list_transactions(**kwargs)
    assert localleads_sandbox.request_count() == 0


def test_list_transactions_validates_even_without_a_connection(make_hook: HookFactory) -> None:
    # Validation comes first: no connection look-up (this conn id does not exist) and no request.
    with pytest.raises(ValueError, match="limit"):
        make_hook("ll_does_not_exist").list_transactions(limit=0)


# ------------------------------------------------------------------------------------ iter_transactions

SeededFactory = Callable[[int], SandboxServer]


def _hook_on(sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory) -> LocalLeadsHook:
    set_conn("ll_seeded", host=sandbox.url, password=sandbox.api_key)
    return make_hook("ll_seeded")


def _mutate_after_pages(
    monkeypatch: pytest.MonkeyPatch, hook: LocalLeadsHook, mutation: Callable[[int, TransactionPage], None]
) -> list[tuple[int, int]]:
    """Make ``hook.list_transactions`` call ``mutation(call_number, page)`` after each page it reads."""
    real = hook.list_transactions
    calls: list[tuple[int, int]] = []

    def wrapped(limit: int = 50, offset: int = 0) -> TransactionPage:
        page = real(limit=limit, offset=offset)
        calls.append((limit, offset))
        mutation(len(calls), page)
        return page

    monkeypatch.setattr(hook, "list_transactions", wrapped)
    return calls


@pytest.mark.parametrize("page_size", [100, 50, 33])
def test_iter_transactions_yields_each_once_in_order(
    seeded_sandbox: SeededFactory, set_conn: ConnSetter, make_hook: HookFactory, page_size: int
) -> None:
    sandbox = seeded_sandbox(250)
    expected = _ids(sandbox.state.all_transactions())
    hook = _hook_on(sandbox, set_conn, make_hook)

    got = list(hook.iter_transactions(page_size=page_size))

    assert _ids(got) == expected
    assert all(isinstance(t, CreditTransaction) for t in got)
    assert [t.created_at for t in got] == sorted((t.created_at for t in got), reverse=True)
    requests = sandbox.request_count(TRANSACTIONS_PATH)
    assert math.ceil(250 / page_size) <= requests <= math.ceil(250 / page_size) + 1
    assert all(int(r.query["limit"]) <= 100 for r in sandbox.requests)


def test_iter_transactions_default_page_size_uses_three_requests_for_250(
    seeded_sandbox: SeededFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    sandbox = seeded_sandbox(250)
    hook = _hook_on(sandbox, set_conn, make_hook)
    assert len(list(hook.iter_transactions())) == 250
    assert sandbox.request_count(TRANSACTIONS_PATH) == 3


@pytest.mark.parametrize("page_size", [10, 7])
def test_iter_transactions_small_pages_cost_at_most_one_extra_request(
    seeded_sandbox: SeededFactory, set_conn: ConnSetter, make_hook: HookFactory, page_size: int
) -> None:
    sandbox = seeded_sandbox(250)
    hook = _hook_on(sandbox, set_conn, make_hook)
    assert len(list(hook.iter_transactions(page_size=page_size))) == 250
    assert sandbox.request_count(TRANSACTIONS_PATH) <= math.ceil(250 / page_size) + 1


def test_iter_transactions_page_size_one_lists_everything(
    seeded_sandbox: SeededFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    sandbox = seeded_sandbox(5)
    hook = _hook_on(sandbox, set_conn, make_hook)
    assert _ids(hook.iter_transactions(page_size=1)) == _ids(sandbox.state.all_transactions())


@pytest.mark.parametrize("inserted", [1, 5, 150])
def test_iter_transactions_ignores_transactions_arriving_while_paging(
    seeded_sandbox: SeededFactory,
    set_conn: ConnSetter,
    make_hook: HookFactory,
    monkeypatch: pytest.MonkeyPatch,
    inserted: int,
) -> None:
    sandbox = seeded_sandbox(250)
    expected = _ids(sandbox.state.all_transactions())
    hook = _hook_on(sandbox, set_conn, make_hook)
    new_ids: list[str] = []

    def insert_after_first(call: int, page: TransactionPage) -> None:
        if call == 1:
            new_ids.extend(_ids(sandbox.insert_transactions(inserted)))

    calls = _mutate_after_pages(monkeypatch, hook, insert_after_first)
    got = _ids(hook.iter_transactions(page_size=100))

    assert got == expected  # each original exactly once, in order, none of the new ones
    assert not set(got) & set(new_ids)
    assert len(calls) <= 4 + inserted // 99


@pytest.mark.parametrize(("count", "page_size", "inserted"), [(250, 100, 99), (30, 10, 9)])
def test_iter_transactions_survives_page_size_minus_one_arrivals(
    seeded_sandbox: SeededFactory,
    set_conn: ConnSetter,
    make_hook: HookFactory,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    page_size: int,
    inserted: int,
) -> None:
    sandbox = seeded_sandbox(count)
    expected = _ids(sandbox.state.all_transactions())
    hook = _hook_on(sandbox, set_conn, make_hook)

    def insert_after_first(call: int, page: TransactionPage) -> None:
        if call == 1:
            sandbox.insert_transactions(inserted)

    _mutate_after_pages(monkeypatch, hook, insert_after_first)
    assert _ids(hook.iter_transactions(page_size=page_size)) == expected


def test_iter_transactions_with_arrivals_after_every_page(
    seeded_sandbox: SeededFactory, set_conn: ConnSetter, make_hook: HookFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = seeded_sandbox(250)
    expected = _ids(sandbox.state.all_transactions())
    hook = _hook_on(sandbox, set_conn, make_hook)
    _mutate_after_pages(monkeypatch, hook, lambda call, page: sandbox.insert_transactions(3))
    assert _ids(hook.iter_transactions(page_size=50)) == expected


@pytest.mark.parametrize("victim", ["middle_of_first_page", "anchor", "first_item"])
def test_iter_transactions_survives_deletion_of_yielded_transaction(
    seeded_sandbox: SeededFactory,
    set_conn: ConnSetter,
    make_hook: HookFactory,
    monkeypatch: pytest.MonkeyPatch,
    victim: str,
) -> None:
    sandbox = seeded_sandbox(250)
    expected = _ids(sandbox.state.all_transactions())
    hook = _hook_on(sandbox, set_conn, make_hook)
    index = {"middle_of_first_page": 40, "anchor": -1, "first_item": 0}[victim]

    def delete_after_first(call: int, page: TransactionPage) -> None:
        if call == 1:
            sandbox.delete_transaction(page.items[index].id)

    _mutate_after_pages(monkeypatch, hook, delete_after_first)
    got = _ids(hook.iter_transactions(page_size=100))

    # The deleted one was already yielded in page one: nothing skipped, nothing repeated.
    assert got == expected


def test_iter_transactions_survives_deletion_of_a_not_yet_yielded_transaction(
    seeded_sandbox: SeededFactory, set_conn: ConnSetter, make_hook: HookFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = seeded_sandbox(250)
    expected = _ids(sandbox.state.all_transactions())
    hook = _hook_on(sandbox, set_conn, make_hook)
    gone = expected[150]

    def delete_after_first(call: int, page: TransactionPage) -> None:
        if call == 1:
            sandbox.delete_transaction(gone)

    _mutate_after_pages(monkeypatch, hook, delete_after_first)
    assert _ids(hook.iter_transactions(page_size=100)) == [i for i in expected if i != gone]


def test_iter_transactions_empty_history(
    seeded_sandbox: SeededFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    sandbox = seeded_sandbox(0)
    hook = _hook_on(sandbox, set_conn, make_hook)
    assert list(hook.iter_transactions()) == []
    assert sandbox.request_count(TRANSACTIONS_PATH) == 1


@pytest.mark.parametrize("page_size", [0, 101, -1, True, "10", 10.0])
def test_iter_transactions_rejects_bad_page_size_before_any_request(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook, page_size: Any
) -> None:
    with pytest.raises(ValueError, match="page_size"):
        list(sandbox_hook.iter_transactions(page_size=page_size))
    assert localleads_sandbox.request_count() == 0


_MUTATION = st.one_of(
    st.tuples(st.just("insert"), st.integers(min_value=1, max_value=25)),
    st.tuples(st.just("delete_yielded"), st.integers(min_value=0, max_value=1000)),
    st.tuples(st.just("delete_unyielded"), st.integers(min_value=0, max_value=1000)),
)


def test_iter_transactions_property_each_survivor_exactly_once(
    set_conn: ConnSetter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random history sizes, page sizes and changes between page reads, against the real sandbox."""
    with SandboxServer() as sandbox:
        set_conn("ll_prop", host=sandbox.url, password=sandbox.api_key)
        hook = LocalLeadsHook("ll_prop", retry_policy=FAST)

        @settings(
            max_examples=60,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            count=st.integers(min_value=0, max_value=40),
            page_size=st.integers(min_value=1, max_value=12),
            mutations=st.dictionaries(st.integers(min_value=1, max_value=6), _MUTATION, max_size=3),
        )
        def check(count: int, page_size: int, mutations: dict[int, tuple[str, int]]) -> None:
            sandbox.state = SandboxState(seed_transactions=count)
            original = _ids(sandbox.state.all_transactions())
            yielded: list[str] = []
            deleted: set[str] = set()
            real = LocalLeadsHook.list_transactions.__get__(hook)
            calls = 0

            def wrapped(limit: int = 50, offset: int = 0) -> TransactionPage:
                nonlocal calls
                page = real(limit=limit, offset=offset)
                calls += 1
                kind, arg = mutations.get(calls, ("none", 0))
                current = [i for i in _ids(sandbox.state.all_transactions()) if i in original]
                if kind == "insert":
                    sandbox.insert_transactions(arg)
                elif kind.startswith("delete"):
                    candidates = [i for i in current if (i in yielded) == (kind == "delete_yielded")]
                    if candidates:
                        victim = candidates[arg % len(candidates)]
                        deleted.add(victim)
                        sandbox.delete_transaction(victim)
                return page

            hook.list_transactions = wrapped  # type: ignore[method-assign]
            try:
                for txn in hook.iter_transactions(page_size=page_size):
                    yielded.append(txn.id)
                    assert calls < 200, "runaway paging"
            except LocalLeadsResponseError as err:
                # The documented, explicit give-up when the history moved too much; never a silent gap.
                if "changed too much" not in str(err):
                    raise
                return
            finally:
                del hook.list_transactions
            # Every original transaction exactly once, in order, none of the new ones; one deleted
            # while paging may or may not have been listed (depending on when it went).
            assert yielded == [i for i in original if i not in deleted or i in yielded]

        try:
            check()
        finally:
            hook.close()


# ------------------------------------------------------------------------------------------ test_connection


def test_test_connection_succeeds_with_the_balance(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    ok, message = sandbox_hook.test_connection()
    assert ok is True
    assert "82 available" in message
    assert localleads_sandbox.url in message
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1


def test_test_connection_reports_a_wrong_key(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    set_conn("ll_wrong_key", host=localleads_sandbox.url, password="definitely-not-the-key")
    ok, message = make_hook("ll_wrong_key").test_connection()
    assert ok is False
    assert "401" in message
    assert "API key" in message
    assert "definitely-not-the-key" not in message
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1  # a 401 is never retried


def test_test_connection_reports_a_missing_connection(make_hook: HookFactory) -> None:
    ok, message = make_hook("ll_missing_conn").test_connection()
    assert ok is False
    assert "ll_missing_conn" in message


def test_test_connection_reports_an_unreachable_host(set_conn: ConnSetter, make_hook: HookFactory) -> None:
    set_conn("ll_unreachable", host=f"http://127.0.0.1:{closed_port()}", password="k-unreachable", max_retries=0)
    ok, message = make_hook("ll_unreachable").test_connection()
    assert ok is False
    assert "Could not reach" in message
