"""The in-memory transaction history the pagination tests change between two reads.

One history, two ways in: ``History.fetch`` is the API as ``iter_exactly_once`` sees it
(tests/client/test_pagination.py), and ``tests/reliability/history_server.py`` serves the same
pages over HTTP to the hook (tests/reliability/test_rel_pagination.py). It is an offset-only,
newest-first list that a test mutates before a given request (``before(request_number)``): inserts
at the head or back-dated into the middle, deletions of transactions yielded or not. Ties with equal
``createdAt`` keep a stable order or are shuffled on every request (as SQL ``ORDER BY created_at
OFFSET`` without a unique tie-breaker may); ``meta.total`` is true or lies. ``Listing`` records what
one listing yielded and checks the promises of ``airflow_provider_localleads.client.pagination``.
"""

from __future__ import annotations

import math
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from airflow_provider_localleads.client.pagination import MAX_PAGE_SIZE
from airflow_provider_localleads.exceptions import LocalLeadsError
from airflow_provider_localleads.models import CreditTransaction, TransactionPage

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
#: How meta.total may lie: "true", "over" (larger than the history) or "under" (smaller than the page
#: shows, so it never agrees with it); "mixed" picks one of the three for every request.
LIES = ("true", "over", "under", "mixed")


@dataclass(frozen=True)
class Txn:
    id: str
    ms: int  # createdAt, in milliseconds after EPOCH
    seq: int  # insertion order: the newer insertion wins a tie when the order is stable
    model: CreditTransaction

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.model.type,
            "amount": self.model.amount,
            "description": self.model.description,
            "createdAt": self.model.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }


class History:
    """An offset-only, newest-first history; ``before(request_number)`` runs before each page."""

    def __init__(self, created_ms: list[int], *, unstable_ties: bool = False, seed: int = 0, lie: str = "true"):
        self.lock = threading.RLock()  # the HTTP server serves pages from its own thread
        self.reset(created_ms, unstable_ties=unstable_ties, seed=seed, lie=lie)

    def reset(self, created_ms: list[int], *, unstable_ties: bool = False, seed: int = 0, lie: str = "true") -> None:
        with self.lock:
            self.items: list[Txn] = []
            self.seq = 0
            self.unstable_ties = unstable_ties
            self.rng = random.Random(seed)
            self.lie = lie
            self.requests = 0
            self.last_call = (0, 0)  # (limit, offset) of the request being served
            self.before: Callable[[int], None] | None = None
            self.max_total = 0
            self.add(created_ms)

    def add(self, created_ms: list[int]) -> list[Txn]:
        with self.lock:
            new = []
            for ms in created_ms:
                self.seq += 1
                txn_id = f"t{self.seq:05d}"
                model = CreditTransaction(
                    id=txn_id,
                    type="DEDUCTION",
                    amount=-1,
                    description=f"txn {txn_id}",
                    created_at=EPOCH + timedelta(milliseconds=ms),
                )
                new.append(Txn(txn_id, ms, self.seq, model))
            self.items.extend(new)
            self.max_total = max(self.max_total, len(self.items))
            return new

    def delete(self, txn_id: str) -> None:
        with self.lock:
            self.items = [t for t in self.items if t.id != txn_id]

    def ordered(self) -> list[Txn]:
        with self.lock:
            if self.unstable_ties:
                return sorted(self.items, key=lambda t: (t.ms, self.rng.random()), reverse=True)
            return sorted(self.items, key=lambda t: (t.ms, t.seq), reverse=True)

    def newest_ms(self) -> int:
        with self.lock:
            return max((t.ms for t in self.items), default=0)

    def _total(self, true_total: int, shown: int) -> int:
        lie = self.rng.choice(LIES[:3]) if self.lie == "mixed" else self.lie
        if lie == "over" or (lie == "under" and shown == 0):
            return true_total + self.rng.randint(1, 50)
        if lie == "under":
            return self.rng.randint(0, shown - 1)
        return true_total

    def window(self, limit: int, offset: int) -> tuple[list[Txn], int]:
        """One request: the page's transactions and its ``meta.total``, after ``before`` ran."""
        with self.lock:
            self.requests += 1
            self.last_call = (limit, offset)
            if self.before is not None:
                self.before(self.requests)
            ordered = self.ordered()
            window = ordered[offset : offset + limit]
            return window, self._total(len(ordered), offset + len(window))

    def fetch(self, limit: int, offset: int) -> TransactionPage:
        # What LocalLeadsHook.list_transactions would refuse with a ValueError.
        assert type(limit) is int, limit
        assert 1 <= limit <= MAX_PAGE_SIZE, limit
        assert type(offset) is int, offset
        assert offset >= 0, offset
        window, total = self.window(limit, offset)
        return TransactionPage(items=tuple(t.model for t in window), total=total, limit=limit, offset=offset)


@dataclass
class Listing:
    """What one listing yielded and cost, and what happened to the history meanwhile."""

    yielded: list[str] = field(default_factory=list)
    yielded_ms: list[int] = field(default_factory=list)
    error: LocalLeadsError | None = None
    requests: int = 0
    events: int = 0
    max_tie_ids: int = 0
    original: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    inserted: dict[str, bool] = field(default_factory=dict)  # id -> newer than the last yielded when added
    ever: dict[str, int] = field(default_factory=dict)  # every id ever present -> createdAt (ms)

    def check_promises(self) -> None:
        dupes = [i for i, c in Counter(self.yielded).items() if c > 1]
        assert not dupes, f"yielded twice: {dupes}"
        assert self.yielded_ms == sorted(self.yielded_ms, reverse=True), "createdAt increased"
        if self.error is None:  # a listing that gave up says so; until then it yields no gap either
            missing = sorted(self.original - self.deleted - set(self.yielded))
            assert not missing, f"present throughout but never yielded: {missing}"
        assert set(self.yielded) <= self.original | set(self.inserted)
        newer = [i for i in self.yielded if self.inserted.get(i)]
        assert not newer, f"yielded transactions added at the head during the listing: {newer}"
        group = max(Counter(self.ever.values()).values(), default=0)
        assert self.max_tie_ids <= max(group, 1), "the cursor remembered more ids than one group of ties"

    def check_requests(self, page_size: int, max_total: int) -> None:
        group = max(Counter(self.ever.values()).values(), default=0)
        # A later page re-reads the transaction before the cursor's ties and the ties themselves,
        # and grows by as many (up to the API's 100): page_size new ones, fewer only at the cap.
        read = min(100, page_size + 1 + group)
        per_page = max(1, read - 1 - min(group, read - 2))
        base = 1 + math.ceil(max(0, max_total - page_size) / per_page)
        per_event = 4 + 2 * math.ceil(math.log2(max_total + 2))
        bound = base + self.events * per_event
        assert self.requests <= bound, f"{self.requests} requests > bound {bound} (base {base}, {self.events} events)"

    def check(self, page_size: int, max_total: int) -> None:
        self.check_promises()
        self.check_requests(page_size, max_total)


def _listing_cursor(generator: Any) -> Any:
    """The listing's ``cursor`` local, through any generators delegating with ``yield from`` (the hook's)."""
    while generator is not None:
        frame = generator.gi_frame
        if frame is not None and "cursor" in frame.f_locals:
            return frame.f_locals["cursor"]
        generator = getattr(generator, "gi_yieldfrom", None)
    return None


def run_listing(
    history: History,
    listing_of: Callable[[], Iterator[CreditTransaction]],
    mutate: Callable[[int, Listing], bool] | None = None,
    *,
    lenient: bool = False,
) -> Listing:
    """Run ``listing_of()`` to the end; ``mutate(request_number, listing)`` runs before each page and
    says if it changed anything. ``lenient``: an error the listing raises is recorded, not raised."""
    listing = Listing(original={t.id for t in history.items}, ever={t.id: t.ms for t in history.items})

    def before(number: int) -> None:
        if mutate is not None and mutate(number, listing):
            listing.events += 1

    history.before = before
    generator = listing_of()
    try:
        for txn in generator:
            listing.yielded.append(txn.id)
            listing.yielded_ms.append(listing.ever[txn.id])
            cursor = _listing_cursor(generator)
            if cursor is not None:
                listing.max_tie_ids = max(listing.max_tie_ids, len(cursor.tie_ids))
    except LocalLeadsError as err:
        if not lenient:
            raise
        listing.error = err
    finally:
        history.before = None
    listing.requests = history.requests
    return listing


def insert(history: History, listing: Listing, created_ms: list[int]) -> list[Txn]:
    last = listing.yielded_ms[-1] if listing.yielded_ms else None
    new = history.add(created_ms)
    for txn in new:
        listing.inserted[txn.id] = last is not None and txn.ms > last
        listing.ever[txn.id] = txn.ms
    return new


def delete(history: History, listing: Listing, txn_id: str) -> None:
    history.delete(txn_id)
    listing.deleted.add(txn_id)


def heavy_churn(history: History) -> Callable[[int, Listing], bool]:
    """From the third request on, each one: 30 new at the head and 30 deletions anywhere (both suites)."""

    def churn(number: int, listing: Listing) -> bool:
        if number < 2:
            return False
        newest = history.newest_ms()
        insert(history, listing, [newest + 1 + i for i in range(30)])
        current = history.ordered()
        for i in range(30):
            delete(history, listing, current[(number * 37 + i * 11) % len(current)].id)
        return True

    return churn


def distinct(n: int) -> list[int]:
    return [i * 1000 for i in range(n)]


OPS = st.one_of(
    # head: count, and whether the new ones tie with the newest transaction
    st.tuples(st.just("head"), st.integers(1, 40), st.booleans()),
    # middle: count, and which existing timestamp (or a new one between two) they are back-dated to
    st.tuples(st.just("middle"), st.integers(1, 5), st.integers(0, 10**6)),
    st.tuples(st.sampled_from(["yielded", "unyielded", "last_yielded", "any"]), st.integers(0, 10**6), st.just(0)),
)
#: Which request numbers change the history, and how (the argument of ``apply_ops``).
SCHEDULES = st.dictionaries(st.integers(2, 14), st.lists(OPS, min_size=1, max_size=3), max_size=4)


def apply_ops(history: History, listing: Listing, ops: list[tuple[str, int, Any]]) -> bool:
    changed = False
    for kind, a, b in ops:
        current = history.ordered()
        if kind == "head":
            newest = history.newest_ms()
            insert(history, listing, [newest if b else newest + 1 + i for i in range(a)])
            changed = True
        elif kind == "middle":
            if current:
                stamps = sorted({t.ms for t in current})
                picked = [stamps[(b + i) % len(stamps)] - (b % 2) * (i % 2) for i in range(a)]  # some between two
                insert(history, listing, [max(0, ms) for ms in picked])
                changed = True
        else:
            yielded = set(listing.yielded)
            if kind == "yielded":
                pool = [t.id for t in current if t.id in yielded]
            elif kind == "unyielded":
                pool = [t.id for t in current if t.id not in yielded]
            elif kind == "last_yielded":
                alive = {t.id for t in current}
                pool = [listing.yielded[-1]] if listing.yielded and listing.yielded[-1] in alive else []
            else:
                pool = [t.id for t in current]
            if pool:
                delete(history, listing, pool[a % len(pool)])
                changed = True
    return changed


def draw_created(data: st.DataObject, max_n: int) -> tuple[list[int], bool]:
    """The createdAt (ms) of up to ``max_n`` transactions, and whether ties may be shuffled per request."""
    n = data.draw(st.integers(0, max_n), label="n")
    ties = data.draw(st.booleans(), label="ties")
    if ties:  # groups of up to n: the order of ties may change on every request
        created = data.draw(st.lists(st.integers(0, max(1, n // 4)), min_size=n, max_size=n), label="created")
    else:
        created = distinct(n)
    return created, ties and data.draw(st.booleans(), label="unstable")
