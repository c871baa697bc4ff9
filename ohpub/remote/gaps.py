"""Filling the gaps a walk left (``remote.listing``), never with a request the server
cannot answer.

A gap is a segment between two cuts (``remote.segments``) whose files did not all come
back: a member cut by a page boundary on a server that reorders its files. Its set of
files is fixed, and known to have ``length`` members; each rung below is tried until
that many distinct ids have been seen at its positions:

1. **One snapshot** (``offset`` = its start, ``limit`` = its length) when it fits one
   request (``Sizer.size``): its edges are cuts, so the answer is exactly its files.
   The gaps that fit go first, a few in flight.
2. **Per member, through the member endpoint**, for each member seen in a longer gap
   whose own count fits one request: one request returns every visible file of that
   member exactly (files of hidden memberships are not there).
3. **Shifted windows**: requests of at most one request's size inside the gap, placed
   differently in each round and each with an end no request had before (on a server
   that orders a member's files by the request's end, the same end brings the same
   order back). What comes back is counted; ``IDLE_ROUNDS`` rounds in a row that bring
   nothing, or ``SHIFT_BUDGET`` times the gap's records in all, end it.

A gap that stays open is reported (``Missing``: its members and how many files each
gap misses) and the endpoint is incomplete; every other directory stays certain.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Generator, Iterator
from typing import Any

from ohpub.model.errors import OhpubError
from ohpub.model.records import DataFile
from ohpub.remote.endpoint import (
    Endpoint,
    EndpointResult,
    Missing,
    Piece,
    count_of,
    prefetch,
)
from ohpub.remote.segments import Segment

log = logging.getLogger("ohpub")

SHIFT_BUDGET = 24
"""Shifted windows may read at most this many times a gap's records. On a server that
reorders a member at random for every request end, finding all ``n`` files takes about
``ln n`` rounds (each file is missed by a round with odds of about 1 in e): 8 for 3,000
files, and 14 to be sure of the last one 999 times in 1,000."""
MAX_ROUNDS = 24
IDLE_ROUNDS = 5
"""Rounds in a row that bring nothing new before the windows give up."""
MAX_MEMBERS = 8
"""Members of one gap asked for through the member endpoint, at most."""
GOLDEN = 0.6180339887
Fill = Generator[DataFile, None, bool]


class GapFiller:
    """The gaps of one consistent pass over ``ep`` (whose ``count`` was ``count``)."""

    def __init__(self, ep: Endpoint, count: int, result: EndpointResult) -> None:
        self.ep = ep
        self.count = count
        self.result = result
        self.moved = False
        """An answer disagreed with the pass: the listing changed, walk it again."""
        self.open: list[Missing] = []

    def run(self, gaps: list[Segment]) -> Generator[DataFile, None, bool | None]:
        """Fill every gap: True when all are, False when the listing moved meanwhile,
        None when some stay open (``self.open``; each also in the report)."""
        if not gaps:
            return True
        ep = self.ep
        shared, alone = ep.sizer.size(), ep.sizer.size(alone=True)
        log.info(
            "listing %s: %d segments cut by page boundaries came back with gaps (%d "
            "records); snapshot requests of up to %d records (%d alone)",
            ep.path,
            len(gaps),
            sum(g.length for g in gaps),
            shared,
            alone,
        )
        longer = [g for g in gaps if g.length > max(shared, alone)]
        fits = [g for g in gaps if g.length <= shared]
        calls = map(self._snapshot_call, fits)
        most = max((g.length for g in fits), default=1)
        in_flight = functools.partial(ep.sizer.allowed, most)
        for g, got in prefetch(calls, in_flight, ep.client.api_concurrency):
            yield from self._snapshot_done(g, got, longer)
            if self.moved:
                return False
        for g in gaps:  # too long to share the server with others, not to run alone
            if shared < g.length <= alone:
                yield from self._snapshot_done(g, *self._snapshot_call(g)()[1:], longer)
                if self.moved:
                    return False
        for g in longer:
            done = yield from self._ladder(g)
            if self.moved:
                return False
            if done:
                self.result.names |= g.names
        return None if self.open else True

    def _snapshot_done(
        self, g: Segment, got: list[Piece] | OhpubError, longer: list[Segment]
    ) -> Iterator[DataFile]:
        if isinstance(got, OhpubError):
            self._failed(g, got)
            return
        found = g.ids if g.ids is not None else set()
        yield from self._absorb(got, g, found)
        exact = len(got) == 1 and len(got[0].results) == g.length  # cut to cut
        if exact or len(found) >= g.length:
            self.result.names |= g.names
        elif not self.moved:
            g.ids = found
            longer.append(g)  # split after a failure: the ladder counts the rest

    # -- rungs ---------------------------------------------------------------------------------

    def _snapshot_call(self, g: Segment) -> Callable[[], tuple[Segment, list[Piece] | OhpubError]]:
        def call() -> tuple[Segment, list[Piece] | OhpubError]:
            try:
                return g, self.ep.fetch(g.start, g.length)
            except OhpubError as exc:
                return g, exc

        return call

    def _ladder(self, g: Segment) -> Fill:
        """Rungs 2 and 3 for a gap longer than a request (or whose snapshot was split)."""
        found: set[int] = g.ids if g.ids is not None else set()
        g.ids = None
        try:
            if self.ep.kind != "member" and g.names:
                yield from self._members(g, found)
            if len(found) < g.length and not self.moved:
                yield from self._shifted(g, found)
        except OhpubError as exc:
            self._failed(g, exc, len(found))
            return False
        if self.moved or len(found) >= g.length:
            return not self.moved
        self._missing(g, g.length - len(found))
        return False

    def _members(self, g: Segment, found: set[int]) -> Iterator[DataFile]:
        """Rung 2: each member of the gap whose count fits one request, whole."""
        ep, size = self.ep, self.ep.sizer.size(alone=True)
        for name in sorted(g.names)[:MAX_MEMBERS]:
            member = ep.sibling(f"/api/public/member/{name}/datafiles/", "member", name)
            pieces = member.fetch(0, 1)  # its count, for one record
            yield from self._member_files(member, pieces, found)
            n = count_of(pieces[0].page) if pieces else None
            if n is None or n <= 1 or n > size:
                continue  # nothing more, or too many for one request
            pieces = member.fetch(0, n)
            if len(pieces) != 1 or len(pieces[0].results) != n:
                continue  # not in one answer: not exact
            yield from self._member_files(member, pieces, found)
            log.info("listing %s: member %s through %s (%d files)", ep.path, name, member.path, n)
            if len(found) >= g.length:
                return

    def _member_files(
        self, member: Endpoint, pieces: list[Piece], found: set[int]
    ) -> Iterator[DataFile]:
        self._count(pieces)
        for piece in pieces:
            yield from member.take(piece).files
            found |= _scope_ids(self.ep, piece.results)

    def _shifted(self, g: Segment, found: set[int]) -> Iterator[DataFile]:
        """Rung 3: rounds of windows inside the gap, each end new, until every file
        came back (or the budget is spent)."""
        ep = self.ep
        spent, idle, rounds = 0, 0, 0
        while len(found) < g.length and rounds < MAX_ROUNDS and idle < IDLE_ROUNDS:
            if spent >= SHIFT_BUDGET * g.length:
                break
            width = max(1, min(ep.sizer.size(), g.length))
            windows = self._round(g, width, rounds)
            before = len(found)
            calls = [_fetch_call(ep, off, lim) for off, lim in windows]
            in_flight = functools.partial(ep.sizer.allowed, width)
            for pieces in prefetch(calls, in_flight, ep.client.api_concurrency):
                spent += sum(len(p.results) for p in pieces)
                yield from self._absorb(pieces, g, found)
                if self.moved:
                    return
            rounds += 1
            idle = idle + 1 if len(found) == before else 0
        log.info(
            "listing %s: positions %d-%d in %d rounds of shifted windows (%d records): "
            "%d of %d files",
            ep.path,
            g.start,
            g.end,
            rounds,
            spent,
            len(found),
            g.length,
        )

    def _round(self, g: Segment, width: int, r: int) -> list[tuple[int, int]]:
        shift = int(((r + 1) * GOLDEN % 1.0) * width)
        starts = [g.start] + list(range(g.start + shift, g.end, width))
        out: list[tuple[int, int]] = []
        for a, b in zip(starts, starts[1:] + [g.end], strict=True):
            if b <= a:
                continue
            lim = b - a
            while lim > 1 and self.ep.used(a + lim):
                lim -= 1  # a new end: on a server that orders by it, a new order
            out.append((a, lim))
        return out

    # -- answers -------------------------------------------------------------------------------

    def _absorb(self, pieces: list[Piece], g: Segment, found: set[int]) -> Iterator[DataFile]:
        """Yield the new files of answers about ``g``; count its ids; notice a move."""
        self._count(pieces)
        for piece in pieces:
            expected = min(piece.limit, self.count - piece.offset)
            if count_of(piece.page) != self.count or len(piece.results) != expected:
                self.moved = True
            parsed = self.ep.take(piece)
            yield from parsed.files
            for i, fid in enumerate(parsed.ids):
                if fid is not None and g.start <= piece.offset + i < g.end:
                    found.add(fid)

    def _count(self, pieces: list[Piece]) -> None:
        for piece in pieces:
            self.ep.report.gap_fills.add(len(piece.results))

    def _failed(self, g: Segment, exc: OhpubError, found: int = 0) -> None:
        self.ep.report.warnings.append(
            f"listing {self.ep.path}: snapshot of positions {g.start}-{g.end} failed: {exc}"
        )
        self.ep.client.on_warning(self.ep.report.warnings[-1])
        self._missing(g, g.length - found)

    def _missing(self, g: Segment, missing: int) -> None:
        m = Missing(self.ep.path, g.start, g.end, sorted(g.names), g.hidden, max(1, missing))
        self.open.append(m)
        self.ep.report.incomplete.append(m)


def _fetch_call(ep: Endpoint, offset: int, limit: int) -> Callable[[], list[Piece]]:
    return lambda: ep.fetch(offset, limit)


def _scope_ids(ep: Endpoint, items: list[Any]) -> set[int]:
    """Ids of ``items`` (records of a member endpoint) that ``ep`` would list."""
    out: set[int] = set()
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), int):
            continue
        if ep.kind == "project" and not str(item.get("source_project", "")).rstrip("/").endswith(
            f"/{ep.value}"
        ):
            continue
        if ep.kind == "datatype" and not any(
            isinstance(u, str) and u.rstrip("/").endswith(f"/{ep.value}")
            for u in item.get("datatypes") or []
        ):
            continue
        out.add(item["id"])
    return out


__all__ = ["GapFiller", "SHIFT_BUDGET"]
