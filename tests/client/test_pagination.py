"""``iter_exactly_once`` over an in-memory history that changes between two reads.

``History.fetch`` (tests/history_support.py) is the API as the listing sees it, changed between
two reads. The promises checked are the module docstring's. The same scenarios run through the hook on
loopback in tests/reliability/test_rel_pagination.py and tests/integration/test_integration_hook_reads.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from history_support import (
    LIES,
    SCHEDULES,
    History,
    Listing,
    apply_ops,
    delete,
    distinct,
    draw_created,
    heavy_churn,
    insert,
)
from history_support import run_listing as run_history_listing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_localleads.client import pagination as _pagination
from airflow_provider_localleads.client.pagination import MAX_PAGE_SIZE, TRANSACTIONS_PATH, iter_exactly_once
from airflow_provider_localleads.exceptions import LocalLeadsResponseError
from airflow_provider_localleads.models import TransactionPage


def run_listing(
    history: History, page_size: int, mutate: Callable[[int, Listing], bool] | None = None, *, lenient: bool = False
) -> Listing:
    """List everything; ``mutate(request_number, listing)`` runs before each page and says if it changed anything."""
    return run_history_listing(history, lambda: iter_exactly_once(history.fetch, page_size), mutate, lenient=lenient)


# ------------------------------------------------------------------------------------ the properties

PAGE_SIZES = st.one_of(st.integers(1, 12), st.sampled_from([25, 99, 100]))
FAST = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def draw_history(data: st.DataObject, *, max_n: int = 70, lie: str | None = None) -> History:
    created, unstable = draw_created(data, max_n)
    lie = lie if lie is not None else data.draw(st.sampled_from(LIES), label="lie")
    return History(created, unstable_ties=unstable, seed=len(created), lie=lie)


@settings(FAST, max_examples=500)
@given(data=st.data())
def test_every_survivor_exactly_once_under_random_changes(data: st.DataObject) -> None:
    history = draw_history(data)
    page_size = data.draw(PAGE_SIZES, label="page_size")
    schedule = data.draw(SCHEDULES, label="schedule")
    listing = run_listing(history, page_size, lambda number, lst: apply_ops(history, lst, schedule.get(number, [])))
    listing.check_promises()
    if history.lie == "true":
        listing.check_requests(page_size, history.max_total)


@settings(FAST, max_examples=100)
@given(data=st.data())
def test_nothing_changes_costs_the_promised_requests(data: st.DataObject) -> None:
    """Distinct timestamps, true totals: 1 + ceil((n - page_size) / min(page_size, 98)) requests, exactly
    for page_size >= 2 (with 1, the second read starts at offset 0 and needs no anchor, so it gains one)."""
    n = data.draw(st.integers(0, 1000), label="n")
    page_size = data.draw(PAGE_SIZES, label="page_size")
    history = History(distinct(n))
    listing = run_listing(history, page_size)
    assert len(listing.yielded) == n
    listing.check_promises()
    bound = 1 + math.ceil(max(0, n - page_size) / min(page_size, 98))
    assert listing.requests == bound if page_size > 1 else listing.requests <= bound
    assert listing.max_tie_ids <= 1  # one page in memory, and one id: not a set of every id


@FAST
@given(data=st.data())
def test_nothing_changes_with_ties_and_lying_totals_lists_everything_once(data: st.DataObject) -> None:
    history = draw_history(data, max_n=150)
    page_size = data.draw(PAGE_SIZES, label="page_size")
    expected = [t.id for t in history.ordered()] if not history.unstable_ties else None
    listing = run_listing(history, page_size)
    listing.check_promises()
    assert len(listing.yielded) == len(history.items)
    if expected is not None:
        assert listing.yielded == expected  # stable ties: exactly the API's order


# ------------------------------------------------------------------------------------ directed cases


@pytest.mark.parametrize(
    ("n", "page_size", "requests"),
    [(250, 100, 3), (250, 10, 25), (0, 100, 1), (100, 100, 1), (5, 1, 4), (2, 1, 2)],
)
def test_requests_when_nothing_changes(n: int, page_size: int, requests: int) -> None:
    history = History(distinct(n))
    listing = run_listing(history, page_size)
    assert listing.yielded == [t.id for t in history.ordered()]
    assert listing.requests == requests


def test_ties_across_a_page_boundary_in_an_unstable_order() -> None:
    """Eight transactions share one millisecond around the first page boundary; the API shuffles them."""
    created = [*distinct(20), *[25_000] * 8, *(i * 1000 for i in range(30, 50))]
    for seed in range(20):
        history = History(created, unstable_ties=True, seed=seed)
        listing = run_listing(history, 10)
        listing.check_promises()
        listing.check_requests(10, history.max_total)
        assert len(listing.yielded) == 48


def test_a_group_of_ties_larger_than_a_read_in_a_stable_order() -> None:
    """More than 98 ties cannot be re-read in one page: with a stable order they are still listed once."""
    history = History([*distinct(30), *[40_000] * 150, *(i * 1000 for i in range(50, 80))])
    listing = run_listing(history, 100)
    listing.check_promises()
    listing.check_requests(100, history.max_total)
    assert listing.yielded == [t.id for t in history.ordered()]


def after_request(number: int, action: Callable[[Listing], None]) -> Callable[[int, Listing], bool]:
    """A mutation run once, after ``number`` pages were read (so before the next one)."""

    def mutate(request: int, listing: Listing) -> bool:
        if request == number + 1:
            action(listing)
            return True
        return False

    return mutate


@pytest.mark.parametrize("inserted", [1, 5, 99, 150, 1000])
def test_arrivals_at_the_head_while_paging_are_not_listed(inserted: int) -> None:
    history = History(distinct(250))
    expected = [t.id for t in history.ordered()]
    newest = history.newest_ms()
    listing = run_listing(
        history, 100, after_request(1, lambda lst: insert(history, lst, [newest + 1 + i for i in range(inserted)]))
    )
    assert listing.yielded == expected
    assert listing.requests <= 4 + inserted // 99


@pytest.mark.parametrize(("count", "page_size", "inserted"), [(250, 100, 99), (30, 10, 9), (200, 10, 1000)])
def test_arrivals_of_about_a_page(count: int, page_size: int, inserted: int) -> None:
    history = History(distinct(count))
    expected = [t.id for t in history.ordered()]
    newest = history.newest_ms()
    flood = after_request(1, lambda lst: insert(history, lst, [newest + 1 + i for i in range(inserted)]))
    listing = run_listing(history, page_size, flood)
    assert listing.yielded == expected
    # meta.total grew: the first re-read jumps straight to where the cursor went
    assert listing.requests <= math.ceil(count / page_size) + 2


def test_arrivals_after_every_page() -> None:
    history = History(distinct(250))
    expected = [t.id for t in history.ordered()]

    def three_more(request: int, listing: Listing) -> bool:
        if request > 1:
            newest = history.newest_ms()
            insert(history, listing, [newest + 1, newest + 2, newest + 3])
        return request > 1

    listing = run_listing(history, 50, three_more)
    assert listing.yielded == expected
    listing.check_requests(50, history.max_total)


@pytest.mark.parametrize("victim", [40, -1, 0])
def test_deletion_of_a_yielded_transaction(victim: int) -> None:
    history = History(distinct(250))
    expected = [t.id for t in history.ordered()]
    listing = run_listing(history, 100, after_request(1, lambda lst: delete(history, lst, lst.yielded[victim])))
    assert listing.yielded == expected  # it was yielded before it went: nothing skipped, nothing repeated
    assert listing.requests <= 3 + 2


def test_deletion_of_the_last_yielded_transaction_twice() -> None:
    history = History(distinct(60))

    def delete_anchor(number: int, listing: Listing) -> bool:
        if number in (2, 4):
            delete(history, listing, listing.yielded[-1])
            return True
        return False

    listing = run_listing(history, 10, delete_anchor)
    listing.check_promises()
    listing.check_requests(10, history.max_total)
    assert len(listing.yielded) == 60


def test_deletions_before_the_cursor_never_skip() -> None:
    """Deleting yielded transactions pulls the rest up: without care the next page would skip some."""
    history = History(distinct(100))
    listing = run_listing(history, 20, after_request(1, lambda lst: [delete(history, lst, i) for i in lst.yielded[:7]]))
    listing.check_promises()
    assert len(listing.yielded) == 100


def test_deletion_of_a_transaction_not_yet_yielded() -> None:
    history = History(distinct(250))
    expected = [t.id for t in history.ordered()]
    gone = expected[150]
    listing = run_listing(history, 100, after_request(1, lambda lst: delete(history, lst, gone)))
    assert listing.yielded == [i for i in expected if i != gone]


def test_everything_deleted_while_paging() -> None:
    history = History(distinct(30))
    wipe = after_request(1, lambda lst: [delete(history, lst, t.id) for t in history.ordered()])
    listing = run_listing(history, 10, wipe)
    assert len(listing.yielded) == 10
    listing.check_promises()


def test_churn_never_skips_silently() -> None:
    """Every request: 30 new at the head and 30 deletions anywhere. Either every survivor is yielded
    exactly once, or the listing says it could not keep up; it never returns a silent gap."""
    history = History(distinct(300), seed=7)

    listing = run_listing(history, 25, heavy_churn(history), lenient=True)
    if listing.error is None:
        listing.check_promises()
        listing.check_requests(25, history.max_total)
    else:
        assert "changed too much" in str(listing.error)
        assert len(set(listing.yielded)) == len(listing.yielded)


def test_a_history_that_always_moves_away_is_a_clear_error() -> None:
    """Before every read the history moves just so that the page read proves nothing: the listing gives
    up after _MAX_RELOCATIONS reads, with the path, instead of paging forever or skipping."""
    history = History(distinct(50))

    def evade(number: int, listing: Listing) -> bool:
        if number < 2:
            return False
        limit, offset = history.last_call
        last = listing.yielded_ms[-1]
        newer = [t for t in history.ordered() if t.ms > last]
        if offset == 0:  # a page at 0 always anchors: fill it with new transactions, so nothing is fresh
            newest = history.newest_ms()
            insert(history, listing, [newest + 1 + i for i in range(max(0, limit - len(newer)))])
        else:  # delete what is newer than the cursor, so the page starts past the cursor's place
            for txn in newer[: max(0, len(newer) - offset)]:
                delete(history, listing, txn.id)
        return True

    listing = run_listing(history, 10, evade, lenient=True)
    assert isinstance(listing.error, LocalLeadsResponseError)
    assert listing.error.path == TRANSACTIONS_PATH
    assert "changed too much" in str(listing.error)
    assert "Run the listing again" in str(listing.error)
    assert listing.requests == 1 + _pagination._MAX_RELOCATIONS + 1
    listing.check_promises()
    assert len(listing.yielded) == 10  # the first page, and nothing it could not prove


def test_too_many_ties_to_remember_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pagination, "_MAX_TIE_IDS", 5)
    history = History([5_000] * 12 + [1_000] * 5)
    listing = run_listing(history, 3, lenient=True)
    assert isinstance(listing.error, LocalLeadsResponseError)
    assert listing.error.path == TRANSACTIONS_PATH
    assert "More than 5 transactions share the timestamp 2026-01-01T00:00:05+00:00" in str(listing.error)
    assert len(set(listing.yielded)) == len(listing.yielded)


def test_memory_is_one_page_plus_the_ties() -> None:
    listing = run_listing(History(distinct(1500)), 100)
    assert len(listing.yielded) == 1500
    assert listing.max_tie_ids == 1  # not a set of all 1500 ids


def test_errors_from_fetch_pass_through_unchanged() -> None:
    history = History(distinct(40))
    boom = LocalLeadsResponseError("bad page", path=TRANSACTIONS_PATH)

    def fetch(limit: int, offset: int) -> TransactionPage:
        if history.requests == 1:
            raise boom
        return history.fetch(limit, offset)

    got: list[str] = []
    with pytest.raises(LocalLeadsResponseError) as raised:
        got.extend(t.id for t in iter_exactly_once(fetch, 10))
    assert raised.value is boom
    assert len(got) == 10  # the first page, nothing after the failed read


@pytest.mark.parametrize("page_size", [0, 101, -1, True, "10", 10.0, None])
def test_bad_page_size_is_refused_before_any_read(page_size: Any) -> None:
    def fetch(limit: int, offset: int) -> TransactionPage:
        raise AssertionError("no read may happen")

    with pytest.raises(ValueError, match=r"^page_size must be a whole number from 1 to 100, got ") as raised:
        iter_exactly_once(fetch, page_size)  # at the call, not at the first next()
    assert repr(page_size) in str(raised.value)


def test_default_page_size_is_the_apis_largest() -> None:
    history = History(distinct(100))
    calls: list[tuple[int, int]] = []

    def fetch(limit: int, offset: int) -> TransactionPage:
        calls.append((limit, offset))
        return history.fetch(limit, offset)

    assert len(list(iter_exactly_once(fetch))) == 100
    assert calls == [(MAX_PAGE_SIZE, 0)]
