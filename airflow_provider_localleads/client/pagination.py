"""The exactly-once listing of the credit history: a pure function over ``fetch(limit, offset)``.

The API pages by offset only, newest first, with no promised order among equal ``createdAt``s; an
insert while a listing pages pushes the rest down, a deletion pulls it up. So no offset is trusted. A
cursor holds the ``createdAt`` of the last transaction yielded and the ids yielded at exactly that
time (ties): everything newer, and those ties, is *done*. A page is believed only if it *anchors*:
read at offset 0, or starting with a transaction strictly newer than the cursor (or, once the ties no
longer fit in one page, with one of them: only then must the API keep the order of ties stable).
Each later page is read from the last anchoring transaction; a page that does not anchor, or shows
nothing new, sends the listing looking for its place again (:class:`_Search`) before it yields more.

Promised while the history changes: nothing is yielded twice and ``createdAt`` never increases; a
transaction present throughout is yielded exactly once; one deleted or added meanwhile at most once
(never if added newer than the last one yielded). If the place cannot be found again within
``_MAX_RELOCATIONS`` reads, a LocalLeadsResponseError says so. ``meta.total`` is only a hint: it
ends the listing when it matches a page exactly (so a total too small that agrees with a full page
ends it early), and guides and bounds the search. Request counts: docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

from airflow_provider_localleads.client.values import python_whole_number
from airflow_provider_localleads.exceptions import LocalLeadsResponseError
from airflow_provider_localleads.models import CreditTransaction, TransactionPage

__all__ = ["MAX_PAGE_SIZE", "TRANSACTIONS_PATH", "iter_exactly_once"]

#: The API's largest ``limit``.
MAX_PAGE_SIZE = 100
TRANSACTIONS_PATH = "/api/v1/credits/transactions"
#: How many reads in a row the listing may spend finding its place again after the history moved.
_MAX_RELOCATIONS = 24
#: How many ids sharing the cursor's createdAt the listing remembers (its only per-history memory).
_MAX_TIE_IDS = 10_000


def iter_exactly_once(
    fetch: Callable[[int, int], TransactionPage], page_size: int = MAX_PAGE_SIZE
) -> Iterator[CreditTransaction]:
    """Every transaction, newest first, each at most once (the promises: the module docstring).

    :param fetch: ``fetch(limit, offset)`` reads one page (``LocalLeadsHook.list_transactions``).
    :param page_size: the first read's ``limit``; later reads add the ties and the transactions that
        prove nothing was skipped, at most ``MAX_PAGE_SIZE``. Checked at once (ValueError).
    """
    return _listing(fetch, validate_limit("page_size", page_size))


def validate_limit(name: str, value: object) -> int:
    number = python_whole_number(value)
    if number is None or not 1 <= number <= MAX_PAGE_SIZE:
        raise ValueError(f"{name} must be a whole number from 1 to {MAX_PAGE_SIZE}, got {value!r}")
    return number


class _Cursor:
    def __init__(self) -> None:
        self.created_at = datetime.max.replace(tzinfo=UTC)  # nothing is done before the first page
        self.tie_ids: set[str] = set()

    def done(self, txn: CreditTransaction) -> bool:
        return txn.created_at > self.created_at or (txn.created_at == self.created_at and txn.id in self.tie_ids)

    def anchors(self, txn: CreditTransaction) -> bool:
        """Whether a page starting with ``txn`` proves that nothing before it is still to be yielded."""
        if len(self.tie_ids) <= MAX_PAGE_SIZE - 2:  # the ties fit in one page with one before and one after
            return txn.created_at > self.created_at
        return self.done(txn)

    def anchored(self, items: Sequence[CreditTransaction]) -> int:
        return next((i for i, txn in enumerate(items) if not self.anchors(txn)), len(items))

    def read_limit(self, page_size: int) -> int:
        """The first page: ``page_size``. Later ones: the anchor, the ties and ``page_size`` new ones."""
        return min(MAX_PAGE_SIZE, page_size + 1 + len(self.tie_ids)) if self.tie_ids else page_size

    def advance(self, fresh: Sequence[CreditTransaction]) -> None:
        """Move past ``fresh``, the transactions of one page that were just yielded."""
        boundary = fresh[-1].created_at
        if boundary != self.created_at:
            self.created_at = boundary
            self.tie_ids = set()
        self.tie_ids.update(txn.id for txn in fresh if txn.created_at == boundary)
        if len(self.tie_ids) > _MAX_TIE_IDS:
            raise LocalLeadsResponseError(
                f"More than {_MAX_TIE_IDS} transactions share the timestamp {boundary.isoformat()}, too many to "
                "list exactly once by offset; list them with list_transactions instead",
                path=TRANSACTIONS_PATH,
            )


def _listing(fetch: Callable[[int, int], TransactionPage], page_size: int) -> Iterator[CreditTransaction]:
    cursor = _Cursor()
    offset = 0
    search = _Search(expected=0, total=0)
    while True:
        limit = cursor.read_limit(page_size)
        page = fetch(limit, offset)
        items = page.items
        anchored = cursor.anchored(items)
        # A short page always ends the history; meta.total only when it agrees exactly with the page.
        ends = len(items) < min(limit, page.limit) or offset + len(items) == page.total
        if (offset == 0 or anchored) and (anchored < len(items) or ends):
            # Nothing before this page is still to come, and it reaches what is: yield what is new.
            fresh = [txn for txn in items if not cursor.done(txn)]
            if fresh:
                yield from fresh
                if ends:
                    return
                cursor.advance(fresh)
                offset = max(0, offset + cursor.anchored(items) - 1)  # start the next page at the last anchor
                search = _Search(expected=offset, total=page.total)
                continue
            if ends:
                return
        offset = search.next_offset(page, offset, anchored, limit)
        if search.reads > _MAX_RELOCATIONS:
            raise LocalLeadsResponseError(
                f"The transaction history changed too much while it was being listed: after {search.reads} "
                "reads the listing could not find its place again without risking a skipped transaction. "
                "Run the listing again (ideally when fewer transactions are being added or deleted)",
                path=TRANSACTIONS_PATH,
            )


class _Search:
    """Finding the listing's place again after the history moved, in few reads.

    The target is the offset of the last anchoring transaction (0 if there is none): a page read
    there anchors and shows what comes next. Each page that does not help narrows the target to
    ``low <= target < high``. The first guess is ``expected`` shifted by the change in
    ``meta.total`` (right if only transactions before the cursor came or went). After that the
    search gallops (doubling steps) until both bounds are known, then bisects. The bounds are only
    guesses, because the history may move again; every page is still checked before it is believed.
    """

    def __init__(self, expected: int, total: int) -> None:
        self.expected, self.total = expected, total
        self.reads = 0
        self.low: int | None = None
        self.high: int | None = None
        self.steps = 0
        self.guessed = False

    def _bound(self, low: int | None = None, high: int | None = None) -> None:
        """Record what a read showed; a bound that contradicts it is stale (the history moved): drop it."""
        if low is not None:
            self.low = low
            if self.high is not None and self.high <= low:
                self.high = None
        if high is not None:
            self.high = high
            if self.low is not None and self.low >= high:
                self.low = None

    def next_offset(self, page: TransactionPage, offset: int, anchored: int, limit: int) -> int:
        """Where to read next, after the page read at ``offset`` anchored for ``anchored`` items but did not help."""
        self.reads += 1
        items = page.items
        if offset == 0 or anchored:
            target = max(0, offset + anchored - 1)
            self._bound(low=target, high=target + 1 if anchored < len(items) else None)
        else:  # the page starts past the target; an empty one is past the end, which meta.total may
            # say (unless it contradicts a known bound: a total can lie, a page cannot)
            past_end = not items and (self.low is None or page.total > self.low)
            self._bound(high=max(1, min(offset, page.total)) if past_end else offset)
        if not self.guessed and page.total != self.total:
            self.guessed = True
            guess = max(0, self.expected + page.total - self.total)
            if guess != offset and (self.low is None or guess >= self.low) and (self.high is None or guess < self.high):
                return guess
        if self.low is not None and self.high is not None:
            # A page read at low holds offsets up to low + limit - 1: enough to reach the target's successor.
            return self.low if self.high - self.low < limit else (self.low + self.high) // 2
        self.steps += 1
        if self.high is None:
            assert self.low is not None
            return self.low + ((1 << (self.steps - 1)) - 1) * (limit - 1)
        return max(0, self.high - (1 << (self.steps - 1)))
