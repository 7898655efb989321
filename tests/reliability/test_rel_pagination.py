"""Promise 5: ``iter_transactions`` lists an offset-only history exactly once while it changes.

What "exactly once" means (the hook's docstring says the same):

* no transaction is yielded twice, and ``createdAt`` never increases along the listing;
* a transaction present from the first request to the last is yielded exactly once;
* one deleted during the listing is yielded at most once (it may be absent);
* one added during the listing is yielded at most once, and never if it was newer than the last
  transaction yielded when it was added (new activity at the head is not part of this listing);
* the number of requests is bounded (a few per change), and memory holds one page plus the ids
  that share the cursor's ``createdAt``, never a set of every id.

A purpose-built in-memory server (``history_server.py``) applies random inserts (at the head, or
back-dated into the middle), deletions (of transactions already yielded, not yet yielded, or the
very last one yielded) between two requests, with distinct timestamps or many ties, and with ties
ordered stably or differently on every request.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from history_server import HistoryServer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from loopback_support import ConnSetter

from airflow_provider_localleads.client import pagination as _pagination
from airflow_provider_localleads.exceptions import LocalLeadsError, LocalLeadsResponseError
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


@dataclass
class Listing:
    """What one run of iter_transactions yielded and cost, with what happened to the history."""

    yielded: list[str] = field(default_factory=list)
    yielded_ms: list[int] = field(default_factory=list)
    error: LocalLeadsError | None = None
    requests: int = 0
    events: int = 0
    max_tie_ids: int = 0
    original: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    inserted: dict[str, bool] = field(default_factory=dict)  # id -> newer than the last yielded when added
    ever: dict[str, int] = field(default_factory=dict)  # every id ever present -> its createdAt (ms)

    @property
    def largest_tie_group(self) -> int:
        return max(Counter(self.ever.values()).values(), default=0)

    def check(self, page_size: int, max_total: int) -> None:
        dupes = [i for i, c in Counter(self.yielded).items() if c > 1]
        assert not dupes, f"yielded twice: {dupes}"
        assert self.yielded_ms == sorted(self.yielded_ms, reverse=True), "createdAt increased"
        missing = sorted(self.original - self.deleted - set(self.yielded))
        assert not missing, f"present throughout but never yielded: {missing}"
        assert set(self.yielded) <= self.original | set(self.inserted)
        newer = [i for i in self.yielded if self.inserted.get(i)]
        assert not newer, f"yielded transactions added at the head during the listing: {newer}"
        group = self.largest_tie_group
        # A later page re-reads the transaction before the cursor's ties and the ties themselves,
        # and grows by as many (up to the API's 100): page_size new ones, fewer only at the cap.
        read = min(100, page_size + 1 + group)
        per_page = max(1, read - 1 - min(group, read - 2))
        base = 1 + math.ceil(max(0, max_total - page_size) / max(per_page, 1))
        per_event = 4 + 2 * math.ceil(math.log2(max_total + 2))
        bound = base + self.events * per_event
        assert self.requests <= bound, f"{self.requests} requests > bound {bound} (base {base}, {self.events} events)"
        assert self.max_tie_ids <= max(group, 1), "the cursor remembered more ids than one group of ties"


def listing_cursor(generator: Any) -> Any:
    """The ``cursor`` local of the listing under the hook's generator (it delegates with ``yield from``)."""
    while generator is not None:
        frame = generator.gi_frame
        if frame is not None and "cursor" in frame.f_locals:
            return frame.f_locals["cursor"]
        generator = getattr(generator, "gi_yieldfrom", None)
    return None


def run_listing(
    hook: LocalLeadsHook,
    history: HistoryServer,
    page_size: int,
    mutate: Callable[[int, Listing], bool] | None = None,
) -> Listing:
    """List everything, calling ``mutate(request_number, listing)`` before each page is served."""
    listing = Listing(original={t.id for t in history.items}, ever={t.id: t.created_ms for t in history.items})

    def before_page(number: int) -> None:
        if mutate is not None and mutate(number, listing):
            listing.events += 1

    history.before_page = before_page
    generator = hook.iter_transactions(page_size=page_size)
    try:
        for txn in generator:
            listing.yielded.append(txn.id)
            listing.yielded_ms.append(int((txn.created_at - hook_epoch()).total_seconds() * 1000))
            cursor = listing_cursor(generator)
            if cursor is not None:
                listing.max_tie_ids = max(listing.max_tie_ids, len(cursor.tie_ids))
    except LocalLeadsError as err:
        listing.error = err
    finally:
        history.before_page = None
    listing.requests = history.requests
    return listing


def hook_epoch() -> Any:
    from history_server import EPOCH

    return EPOCH


def insert(history: HistoryServer, listing: Listing, created: list[int]) -> None:
    last = listing.yielded_ms[-1] if listing.yielded_ms else None
    for txn in history.add(created):
        listing.inserted[txn.id] = last is not None and txn.created_ms > last
        listing.ever[txn.id] = txn.created_ms


def delete(history: HistoryServer, listing: Listing, txn_id: str) -> None:
    history.delete(txn_id)
    listing.deleted.add(txn_id)


# ------------------------------------------------------------------------------------ the property

OPS = st.one_of(
    st.tuples(st.just("head"), st.integers(1, 40), st.booleans()),
    st.tuples(st.just("backdated"), st.integers(1, 5), st.integers(0, 10**6)),
    st.tuples(st.sampled_from(["yielded", "unyielded", "last_yielded", "any"]), st.integers(0, 10**6), st.just(0)),
)


def apply_ops(history: HistoryServer, listing: Listing, ops: list[tuple[str, int, Any]]) -> bool:
    changed = False
    for kind, a, b in ops:
        current = history.ordered()
        if kind == "head":
            newest = history.newest_ms()
            insert(history, listing, [newest if b else newest + 1 + i for i in range(a)])
            changed = True
            continue
        if kind == "backdated":
            if current:
                stamps = sorted({t.created_ms for t in current})
                insert(history, listing, [stamps[(b + i) % len(stamps)] for i in range(a)])
                changed = True
            continue
        yielded = set(listing.yielded)
        if kind == "yielded":
            pool = [t.id for t in current if t.id in yielded]
        elif kind == "unyielded":
            pool = [t.id for t in current if t.id not in yielded]
        elif kind == "last_yielded":
            pool = [listing.yielded[-1]] if listing.yielded and listing.yielded[-1] in {t.id for t in current} else []
        else:
            pool = [t.id for t in current]
        if pool:
            delete(history, listing, pool[a % len(pool)])
            changed = True
    return changed


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
        n = data.draw(st.integers(0, 70), label="n")
        page_size = data.draw(st.one_of(st.integers(1, 12), st.sampled_from([25, 100])), label="page_size")
        ties = data.draw(st.booleans(), label="ties")
        if ties:
            created = data.draw(st.lists(st.integers(0, max(1, n // 4)), min_size=n, max_size=n), label="created")
        else:
            created = [i * 1000 for i in range(n)]
        unstable = ties and data.draw(st.booleans(), label="unstable")
        schedule = data.draw(
            st.dictionaries(st.integers(2, 14), st.lists(OPS, min_size=1, max_size=3), max_size=4), label="schedule"
        )
        history.reset(created, unstable_ties=unstable, seed=n)
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

    def churn(number: int, listing: Listing) -> bool:
        if number < 2:
            return False
        newest = history.newest_ms()
        insert(history, listing, [newest + 1 + i for i in range(30)])
        current = history.ordered()
        for i in range(30):
            delete(history, listing, current[(number * 37 + i * 11) % len(current)].id)
        return True

    listing = run_listing(hook, history, 25, churn)
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
