"""Promise 5: ``iter_transactions`` lists an offset-only history exactly once while it changes.

What "exactly once" means (the hook's docstring says the same):

* no transaction is yielded twice, and ``createdAt`` never increases along the listing;
* a transaction present from the first request to the last is yielded exactly once;
* one deleted during the listing is yielded at most once (it may be absent);
* one added during the listing is yielded at most once, and never if it was newer than the last
  transaction yielded when it was added (new activity at the head is not part of this listing);
* the number of requests is bounded (a few per change), and memory holds one page plus the ids
  that share the cursor's ``createdAt``, never a set of every id.

The in-memory history of tests/history_support.py, served on loopback (``history_server.py``),
applies random inserts (at the head, or back-dated into the middle) and deletions (of transactions
already yielded, not yet yielded, or the very last one yielded) between two requests, with distinct
timestamps or many ties, and with ties ordered stably or differently on every request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from history_server import HistoryServer
from history_support import SCHEDULES, Listing, apply_ops, delete, draw_created, heavy_churn, insert
from history_support import run_listing as run_history_listing
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from loopback_support import ConnSetter

from airflow_provider_localleads.client import pagination as _pagination
from airflow_provider_localleads.exceptions import LocalLeadsResponseError
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook


@pytest.fixture(scope="module")
def history() -> Iterator[HistoryServer]:
    server = HistoryServer()
    yield server
    server.stop()


@pytest.fixture
def hook(history: HistoryServer, set_conn: ConnSetter) -> Iterator[LocalLeadsHook]:
    set_conn("rel_history", host=history.url, password="k", max_retries=0)
    with LocalLeadsHook("rel_history") as h:
        yield h


def run_listing(
    hook: LocalLeadsHook,
    history: HistoryServer,
    page_size: int,
    mutate: Callable[[int, Listing], bool] | None = None,
) -> Listing:
    """List everything, calling ``mutate(request_number, listing)`` before each page is served."""
    return run_history_listing(history, lambda: hook.iter_transactions(page_size=page_size), mutate, lenient=True)


def test_every_survivor_exactly_once_under_random_inserts_and_deletes(
    hook: LocalLeadsHook, history: HistoryServer
) -> None:
    @settings(
        max_examples=250,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        phases=[Phase.explicit, Phase.generate] if os.environ.get("REL_NO_SHRINK") else list(Phase),
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        created, unstable = draw_created(data, 70)
        page_size = data.draw(st.one_of(st.integers(1, 12), st.sampled_from([25, 100])), label="page_size")
        schedule = data.draw(SCHEDULES, label="schedule")
        history.reset(created, unstable_ties=unstable, seed=len(created))
        listing = run_listing(
            hook, history, page_size, lambda number, lst: apply_ops(history, lst, schedule.get(number, []))
        )
        assert listing.error is None, f"gave up: {listing.error}"
        listing.check(page_size, history.max_total)

    check()


# ------------------------------------------------------------------------------------ directed cases


def test_nothing_changes_costs_one_request_per_page(hook: LocalLeadsHook, history: HistoryServer) -> None:
    history.reset([i * 1000 for i in range(250)])
    listing = run_listing(hook, history, 100)
    assert len(listing.yielded) == 250
    assert listing.requests == 3  # 100, then 98 new of 100, then the last 52
    history.reset([i * 1000 for i in range(250)])
    assert run_listing(hook, history, 10).requests == 25


def test_ties_across_a_page_boundary_in_an_unstable_order(hook: LocalLeadsHook, history: HistoryServer) -> None:
    """Eight transactions share one millisecond around the first page boundary; the API shuffles them."""
    created = [i * 1000 for i in range(20)] + [25_000] * 8 + [i * 1000 for i in range(30, 50)]
    for seed in range(20):
        history.reset(created, unstable_ties=True, seed=seed)
        listing = run_listing(hook, history, 10)
        listing.check(10, history.max_total)
        assert len(listing.yielded) == 48


def test_the_last_yielded_transaction_deleted_between_pages(hook: LocalLeadsHook, history: HistoryServer) -> None:
    history.reset([i * 1000 for i in range(60)])

    def delete_anchor(number: int, listing: Listing) -> bool:
        if number in (2, 4):
            delete(history, listing, listing.yielded[-1])
            return True
        return False

    listing = run_listing(hook, history, 10, delete_anchor)
    listing.check(10, history.max_total)
    assert len(listing.yielded) == 60  # the deleted ones had been yielded already


def test_deletions_before_the_cursor_never_skip(hook: LocalLeadsHook, history: HistoryServer) -> None:
    """Deleting yielded transactions pulls the rest up: without care the next page would skip some."""
    history.reset([i * 1000 for i in range(100)])

    def delete_seven_yielded(number: int, listing: Listing) -> bool:
        if number == 2:
            for txn_id in listing.yielded[:7]:
                delete(history, listing, txn_id)
            return True
        return False

    listing = run_listing(hook, history, 20, delete_seven_yielded)
    listing.check(20, history.max_total)
    assert len(listing.yielded) == 100


def test_more_inserts_than_a_page_between_two_reads(hook: LocalLeadsHook, history: HistoryServer) -> None:
    history.reset([i * 1000 for i in range(200)])

    def flood(number: int, listing: Listing) -> bool:
        if number == 2:
            insert(history, listing, [10**7 + i for i in range(1000)])
            return True
        return False

    listing = run_listing(hook, history, 10, flood)
    listing.check(10, history.max_total)
    assert len(listing.yielded) == 200
    # meta.total grew by 1000: the first re-read jumps straight there instead of paging through them
    assert listing.requests <= 20 + 2


def test_a_group_of_ties_larger_than_a_read(hook: LocalLeadsHook, history: HistoryServer) -> None:
    history.reset([i * 1000 for i in range(30)] + [40_000] * 150 + [i * 1000 for i in range(50, 80)])
    listing = run_listing(hook, history, 100)
    listing.check(100, history.max_total)
    assert len(listing.yielded) == 210


def test_too_many_ties_to_remember_is_a_clear_error(
    hook: LocalLeadsHook, history: HistoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pagination, "_MAX_TIE_IDS", 5)
    history.reset([5_000] * 12 + [1_000] * 5)
    listing = run_listing(hook, history, 3)
    assert isinstance(listing.error, LocalLeadsResponseError)
    assert "share the timestamp" in str(listing.error)
    assert len(set(listing.yielded)) == len(listing.yielded)


def test_memory_is_one_page_plus_the_ties(hook: LocalLeadsHook, history: HistoryServer) -> None:
    history.reset([i * 1000 for i in range(1500)])
    listing = run_listing(hook, history, 100)
    assert len(listing.yielded) == 1500
    assert listing.max_tie_ids == 1  # not a set of all 1500 ids


def test_churn_never_skips_silently(hook: LocalLeadsHook, history: HistoryServer) -> None:
    """Every request: 30 new at the head and 30 deletions anywhere. Either every survivor is yielded
    exactly once, or the listing says it could not keep up; it never returns a silent gap."""
    history.reset([i * 1000 for i in range(300)], seed=7)

    listing = run_listing(hook, history, 25, heavy_churn(history))
    if listing.error is None:
        listing.check(25, history.max_total)
    else:
        assert "changed too much" in str(listing.error)
        assert len(set(listing.yielded)) == len(listing.yielded)


class _Broken:
    """Wraps the server's page builder to corrupt one answer."""

    def __init__(self, history: HistoryServer, corrupt: Callable[[dict[str, Any], int], None]) -> None:
        self.history, self.corrupt, self.original = history, corrupt, history.page

    def page(self, limit: int, offset: int) -> dict[str, Any]:
        payload = self.original(limit, offset)
        self.corrupt(payload, self.history.requests)
        return payload


def _reverse_second_page(payload: dict[str, Any], number: int) -> None:
    if number == 2:
        payload["data"].reverse()


def _ignore_offset(payload: dict[str, Any], number: int) -> None:
    if number == 2:
        payload["meta"]["offset"] = 0


def _duplicate_an_id(payload: dict[str, Any], number: int) -> None:
    if number == 2:
        payload["data"][1] = dict(payload["data"][1], id=payload["data"][0]["id"])


@pytest.mark.parametrize(
    ("corrupt", "words"),
    [
        (_reverse_second_page, "is out of order"),
        (_ignore_offset, "meta.offset is 0 but offset="),
        (_duplicate_an_id, "appears twice in one page"),
    ],
    ids=["out-of-order", "offset-ignored", "duplicate-id"],
)
def test_pages_that_contradict_themselves_are_refused(
    hook: LocalLeadsHook,
    history: HistoryServer,
    monkeypatch: pytest.MonkeyPatch,
    corrupt: Callable[[dict[str, Any], int], None],
    words: str,
) -> None:
    history.reset([i * 1000 for i in range(40)])
    monkeypatch.setattr(history, "page", _Broken(history, corrupt).page)
    listing = run_listing(hook, history, 10)
    assert isinstance(listing.error, LocalLeadsResponseError)
    assert words in str(listing.error)
    assert "HTTP 200" in str(listing.error)
    assert len(listing.yielded) == 10  # the first page, nothing after the bad one
