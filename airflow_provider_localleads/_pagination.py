"""Every transaction exactly once, over an API that pages by offset while the history moves.

A pure function over ``fetch(limit, offset) -> TransactionPage`` (the hook's ``list_transactions``),
so it can be tested in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from airflow_provider_localleads.exceptions import LocalLeadsResponseError
from airflow_provider_localleads.models import CreditTransaction, TransactionPage

TRANSACTIONS_PATH = "/api/v1/credits/transactions"
MAX_PAGE_SIZE = 100
#: How many reads in a row the listing may spend re-finding its place after the history moved.
_MAX_RELOCATIONS = 24
#: How many ids sharing the last yielded createdAt the listing remembers (its only per-history memory).
_MAX_TIE_IDS = 10_000


def validate_limit(name: str, value: object) -> int:
    if type(value) is not int or not 1 <= value <= MAX_PAGE_SIZE:
        raise ValueError(f"{name} must be a whole number from 1 to {MAX_PAGE_SIZE}, got {value!r}")
    return value


def iter_exactly_once(
    fetch: Callable[[int, int], TransactionPage], page_size: int = MAX_PAGE_SIZE
) -> Iterator[CreditTransaction]:
    """Every transaction, newest first, each at most once, one page in memory at a time.

    The API pages by offset only, so a transaction added while we page pushes the rest down
    and a deleted one pulls it up. This listing keeps a cursor instead of trusting offsets:
    the ``createdAt`` of the last transaction yielded and the ids yielded at exactly that
    ``createdAt`` (ties). Each later page is read so that it starts with a transaction
    strictly newer than the cursor (the one before the last yielded, or before its ties),
    which proves nothing between the pages was skipped, whatever order the API gives equal
    timestamps; if the history moved and it does not, the listing searches for its place
    again (the change in ``meta.total`` as a first guess, then galloping and bisecting)
    before yielding more. Within a page only transactions past the cursor are yielded.

    What is promised, for a history that changes while it is listed:

    * no transaction is yielded twice, and the order is newest first (``createdAt`` never
      increases);
    * a transaction present from the first request to the last is yielded exactly once;
    * one deleted while listing is yielded at most once (it may be absent); one added while
      listing is yielded at most once, and never if it is newer than the last transaction
      yielded when it was added (new activity at the head is not part of this listing);
    * if the history changes so fast that the place cannot be found again within
      ``_MAX_RELOCATIONS`` reads, LocalLeadsResponseError says so: run the listing again.

    Requests: ``1 + ceil((n - page_size) / min(page_size, 98))`` for ``n`` transactions with
    distinct timestamps when nothing changes (later pages are read with ``page_size + 2``
    items, two of them already seen, up to the API's limit of 100; with ties, the read grows
    to hold them), plus a few per change (logarithmic in how far the history moved).
    Memory: one page, plus the ids sharing the cursor's ``createdAt`` (at most
    ``_MAX_TIE_IDS``; more ties than that is refused). Only if more than 98 transactions share
    one ``createdAt`` must the API keep their relative order stable between requests.
    """
    page_size = validate_limit("page_size", page_size)
    first = fetch(page_size, 0)
    yield from first.items
    if not first.items or _ends_history(first, 0, page_size):
        return
    cursor = _HistoryCursor(first)
    read_limit = cursor.read_limit(page_size)
    offset = cursor.next_offset(read_limit)
    search = _Relocation()
    while True:
        page = fetch(read_limit, offset)
        items = page.items
        if not items and offset == 0:
            return  # everything was deleted
        strict = cursor.strict(read_limit)
        if items and (offset == 0 or cursor.safe_start(items[0], strict)):
            # Nothing before this page is still to be yielded: take what is new in it.
            fresh = [t for t in items if not cursor.done(t)]
            last = _ends_history(page, offset, read_limit)
            if fresh:
                yield from fresh
                if last:
                    return
                cursor.advance(page, offset, fresh)
                read_limit = cursor.read_limit(page_size)
                offset = cursor.next_offset(read_limit)
                search = _Relocation()
                continue
            if last:
                return
            offset = search.next_offset(cursor, page, offset, read_limit, behind=True, strict=strict)
        else:
            # The page starts past the cursor (deletions before it, or we jumped too far).
            offset = search.next_offset(cursor, page, offset, read_limit, behind=False, strict=strict)
        if search.reads > _MAX_RELOCATIONS:
            raise LocalLeadsResponseError(
                f"The transaction history changed too much while it was being listed: after {search.reads} "
                "reads the listing could not find its place again without risking a skipped transaction. "
                "Run the listing again (ideally when fewer transactions are being added or deleted)",
                path=TRANSACTIONS_PATH,
            )


def _ends_history(page: TransactionPage, offset: int, limit: int) -> bool:
    """Whether ``page`` (read at ``offset`` with ``limit``) reaches the end of the history.

    A short page always does. ``meta.total`` only counts when it agrees exactly with the page: a
    total smaller than what the page shows is an inconsistent count and is not trusted.
    """
    return len(page.items) < min(limit, page.limit) or offset + len(page.items) == page.total


class _HistoryCursor:
    """How far :meth:`LocalLeadsHook.iter_transactions` has got, independent of offsets.

    Every transaction newer than ``created_at``, and those at exactly ``created_at`` whose ids are
    in ``tie_ids``, is behind the cursor ("done"): yielded, or newer than the listing. Also kept,
    as guesses for the next read: where the ties began (``group_start``), where the last page
    ended (``last``) and ``meta.total`` then (``total``).
    """

    def __init__(self, first: TransactionPage) -> None:
        self.created_at: datetime = first.items[-1].created_at
        self.tie_ids: set[str] = set()
        self.group_start = 0
        self.last = 0
        self.total = first.total
        self.advance(first, 0, first.items)

    def done(self, txn: CreditTransaction) -> bool:
        return txn.created_at > self.created_at or (txn.created_at == self.created_at and txn.id in self.tie_ids)

    def read_limit(self, page_size: int) -> int:
        """How many to read next: the transaction before the ties, the ties, and ``page_size`` new ones
        (at most the API's 100), so that a whole group of ties is seen in one read whenever it can be."""
        return min(MAX_PAGE_SIZE, page_size + 1 + len(self.tie_ids))

    def fits(self, read_limit: int) -> bool:
        """Whether the ties fit in one read together with one transaction before and one after them."""
        return len(self.tie_ids) <= read_limit - 2

    def strict(self, read_limit: int) -> bool:
        """Whether a page must start *strictly* before the cursor's ``createdAt`` to prove nothing was skipped.

        Always, unless the ties are too many for one read: an API may order equal timestamps
        differently on each request (SQL ``ORDER BY created_at`` with ``OFFSET`` does), so a page
        starting *at* a yielded transaction proves nothing about its unseen ties. Re-reading the
        whole group of ties from the transaction before it makes their order irrelevant.
        """
        return self.fits(read_limit)

    def safe_start(self, txn: CreditTransaction, strict: bool) -> bool:
        """Whether a page starting with ``txn`` proves that nothing before it is still to be yielded."""
        return txn.created_at > self.created_at or (not strict and txn.id in self.tie_ids)

    def next_offset(self, read_limit: int, total: int | None = None) -> int:
        """Where the next page should start: just before the ties at the cursor (or at the last
        transaction read, if they do not fit in a page). With ``total``, shifted by how much
        ``meta.total`` changed: right if only transactions newer than the cursor came or went."""
        aligned = self.group_start - 1 if self.fits(read_limit) else self.last
        shift = 0 if total is None else total - self.total
        return max(0, aligned + shift)

    def advance(self, page: TransactionPage, offset: int, fresh: Sequence[CreditTransaction]) -> None:
        """Move past ``fresh`` (the new transactions of ``page``, read at ``offset``, just yielded)."""
        boundary = fresh[-1].created_at
        if boundary != self.created_at:
            self.created_at = boundary
            self.tie_ids = set()
        self.tie_ids.update(t.id for t in fresh if t.created_at == boundary)
        if len(self.tie_ids) > _MAX_TIE_IDS:
            raise LocalLeadsResponseError(
                f"More than {_MAX_TIE_IDS} transactions share the timestamp {boundary.isoformat()}, too many to "
                "list exactly once by offset; list them with list_transactions instead",
                path=TRANSACTIONS_PATH,
            )
        self.group_start = offset + next(i for i, t in enumerate(page.items) if t.created_at == boundary)
        self.last = offset + len(page.items) - 1
        self.total = page.total


class _Relocation:
    """Finding the cursor's place again after the history moved, in few reads.

    ``behind``: the offset of a transaction seen to be behind the cursor with nothing new before
    it (the boundary is after it); ``ahead``: an offset whose transaction was not behind the cursor
    (the boundary is at or before it). The first guess comes from the change in ``meta.total``;
    then the search gallops (doubling steps) until both bounds are known, and bisects between them.
    The bounds are only guesses (the history may move again); every page is still checked.
    """

    def __init__(self) -> None:
        self.reads = 0
        self.behind: int | None = None
        self.ahead: int | None = None
        self.steps = 0
        self.guessed = False

    def next_offset(
        self,
        cursor: _HistoryCursor,
        page: TransactionPage,
        offset: int,
        read_limit: int,
        *,
        behind: bool,
        strict: bool,
    ) -> int:
        self.reads += 1
        items = page.items
        if behind:
            sentinel = len(items) - 1
            if strict:  # the next page must start strictly before the cursor: keep such a transaction
                while sentinel > 0 and items[sentinel].created_at <= cursor.created_at:
                    sentinel -= 1
                if sentinel == 0:
                    sentinel = len(items) - 1
            self.behind = offset + sentinel
            if self.ahead is not None and self.ahead <= self.behind:
                self.ahead = None
        else:
            self.ahead = offset if items else min(offset, page.total)
            if self.behind is not None and self.behind >= self.ahead:
                self.behind = None
        if not self.guessed and page.total != cursor.total:
            self.guessed = True
            guess = cursor.next_offset(read_limit, page.total)
            if (
                guess != offset
                and (self.behind is None or guess >= self.behind)
                and (self.ahead is None or guess < self.ahead)
            ):
                return guess
        if self.behind is not None and self.ahead is not None:
            if self.ahead - self.behind < read_limit:
                return self.behind
            return (self.behind + self.ahead) // 2
        self.steps += 1
        if self.ahead is None:
            assert self.behind is not None
            return self.behind + ((1 << (self.steps - 1)) - 1) * (read_limit - 1)
        return max(0, self.ahead - (1 << (self.steps - 1)))
