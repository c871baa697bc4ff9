"""A complete file listing over an API whose order is by username only, in requests the
server can answer.

The server sorts a listing by username and nothing else, so within one member (one
"block" of positions) the order changes from request to request, and an offset page
boundary that cuts a block returns a random part of it on each side: some files twice,
some never (the reference notes, sections 3 and 6). Re-walking the same pages never
heals that; only a request whose two edges do not cut a block does. And every listed
record costs the server real time, behind a router that answers HTTP 500 at 30 s.

So one endpoint is listed like this:

1. **One walk** of offset pages, each sized by the client's ``Sizer`` (``remote.sizing``:
   a third of the server's time limit at the speed its answers showed, at most
   ``page_size``), a few in flight (fewer while the server struggles). A request that
   times out or gets a 5xx is asked again in smaller pieces (``Endpoint.fetch``), never
   re-sent unchanged. When nothing runs ahead of it (one request in flight) on a server
   seen to reorder members, the next page starts at the last cut of the one before when
   that re-reads at most half a page: the member the page boundary would cut is then
   covered by one request instead of a gap to fill.
2. The walk learns the username at every position, so its cuts and segments
   (``remote.segments``): a segment inside one request, or whose ids all came back, is
   complete; the others are *gaps*.
3. The gaps are filled by requests that each fit the server (``remote.gaps``): one
   snapshot from cut to cut when the gap fits one request, else each member of it
   through the member endpoint, else shifted windows, counted until every file came back.
4. Every answer must agree with the walk (same ``count``, full pages). When one does
   not, files were added or removed during the crawl, positions moved, and the endpoint
   is walked again (at most ``max_crawls`` walks), keeping what was already seen.

The crawl is bounded by what arrives, not by ``count``: it ends at an empty page, at
``next: null``, or after ``MAX_STALE_PAGES`` pages in a row without an id new to this
walk; the listing is then incomplete. An incomplete listing still says which members'
files it listed completely (``ListingReport.directory_complete``): the mirror places
those and keeps the rest for the next run.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ohpub.model.errors import NotFoundError, OhpubError
from ohpub.model.filters import FileFilter
from ohpub.model.records import DataFile
from ohpub.model.units import plural
from ohpub.remote.endpoint import (
    Client,
    Endpoint,
    EndpointResult,
    ListingReport,
    Missing,
    Piece,
    check_next,
    count_of,
    prefetch,
)
from ohpub.remote.gaps import GapFiller
from ohpub.remote.segments import Segment, SegmentTracker, last_cut

log = logging.getLogger("ohpub")

MAX_STALE_PAGES = 3
"""Pages in a row without an id new to the pass that end it (a server that repeats itself)."""
OBJECT_PAGE = 500
"""Page size of the small object lists (projects, datatypes, members)."""


@dataclass
class _Pass:
    """What one walk over an endpoint established."""

    count: int | None = None
    consistent: bool = True
    positions: int = 0
    tracker: SegmentTracker = field(default_factory=SegmentTracker)
    ids: set[int] = field(default_factory=set)
    stale: int = 0
    over: bool = False
    certain: set[str] | None = None
    """The members listed completely before the walk disagreed with itself."""
    certain_gaps: int = 0
    """How many of the gaps closed before that."""

    def doubt(self) -> None:
        if self.consistent:
            self.certain = set(self.tracker.names)
            self.certain_gaps = len(self.tracker.gaps)
        self.consistent = False


class _Window:
    """One page of the walk: where it starts, and what came back once it has."""

    def __init__(self, offset: int, limit: int) -> None:
        self.offset, self.limit = offset, limit
        self.pieces: list[Piece] | None = None

    def end(self) -> int:
        got = sum(len(p.results) for p in self.pieces or [])
        return self.offset + got


class EndpointCrawl:
    """The complete listing of one path endpoint (see the module docstring)."""

    def __init__(self, ep: Endpoint, max_passes: int) -> None:
        self.ep = ep
        self.max_passes = max(1, max_passes)
        self.result = EndpointResult(ep.kind, ep.value)
        ep.report.endpoints.append(self.result)

    @property
    def complete(self) -> bool:
        return self.result.complete

    def run(self) -> Iterator[DataFile]:
        """Yield the endpoint's new files; ``self.complete`` says whether nothing is missing."""
        report = self.ep.report
        p, n = _Pass(), 0
        for n in range(1, self.max_passes + 1):
            report.crawls += 1
            p = _Pass(tracker=SegmentTracker(keep_ids=self._keep_ids))
            try:
                yield from self._walk(p)
            except OhpubError:  # a request failed for good: what it closed is still certain
                self.result.names |= p.tracker.names if p.consistent else (p.certain or set())
                yield from self._fill_certain(p)
                raise
            self.result.names |= p.tracker.names if p.consistent else (p.certain or set())
            if p.consistent:
                report.verified_segments += p.tracker.verified
                filler = GapFiller(self.ep, p.count or 0, self.result)
                outcome = yield from filler.run(p.tracker.gaps)
                if outcome is None:
                    report.expected += p.count or 0
                    self._warn_open(filler.open)
                    return  # gaps that no request could fill: asking again would not
                if outcome:
                    report.expected += p.count or 0
                    self.result.complete = True
                    return
            if n < self.max_passes:
                log.info(
                    "listing %s changed during pass %d (count %s, %d positions); listing it again",
                    self.ep.path,
                    n,
                    p.count,
                    p.positions,
                )
        if not p.consistent:  # (a count that lies, say; a consistent walk's gaps moved)
            yield from self._fill_certain(p)
        report.expected += p.count or 0
        self._warn(
            f"listing {self.ep.path} stayed incomplete after {n} passes "
            f"(the server's count says {p.count}, {p.positions} positions came back)"
        )

    def _fill_certain(self, p: _Pass) -> Iterator[DataFile]:
        """After a walk that failed or disagreed with itself: the gaps it closed before
        that lie between real cuts, so filling them still names members whose files are
        all listed (the mirror places those)."""
        gaps = p.tracker.gaps if p.consistent else p.tracker.gaps[: p.certain_gaps]
        if gaps and p.count is not None:
            yield from GapFiller(self.ep, p.count, self.result).run(gaps)

    def _keep_ids(self, length: int) -> bool:
        """A gap too long for one request keeps its ids: the rungs that fill it count them."""
        return length * 2 > self.ep.sizer.size()

    def _warn(self, message: str) -> None:
        self.ep.report.warnings.append(message)
        self.ep.client.on_warning(message)

    def _warn_open(self, open_gaps: list[Missing]) -> None:
        more = f"; and {len(open_gaps) - 3} more gaps" if len(open_gaps) > 3 else ""
        self._warn(
            f"listing {self.ep.path} incomplete: "
            + "; ".join(m.message() for m in open_gaps[:3])
            + more
        )

    # -- the walk ------------------------------------------------------------------------------

    def _walk(self, p: _Pass) -> Iterator[DataFile]:
        ep = self.ep
        first = _Window(0, ep.sizer.size(ep.client.page_size))
        first.pieces = ep.fetch(first.offset, first.limit)
        for piece in first.pieces:
            yield from self._piece(piece, p)
        if not p.over and self._whole_member(p):
            return
        if not p.over:
            windows = self._windows(p, first)
            width = functools.partial(ep.sizer.allowed, ep.client.page_size)
            for pieces in prefetch(windows, width, ep.client.api_concurrency):
                for piece in pieces:
                    yield from self._piece(piece, p)
                    if p.over:
                        break
                if p.over:
                    break
        if p.count is None or p.positions != p.count:
            p.doubt()  # (before the end closes the last segment: that end is no cut)
        p.tracker.finish(p.positions)

    def _whole_member(self, p: _Pass) -> bool:
        """One member end to end: every page boundary cuts it, so when its count fits one
        request, that one request is the gap to fill, and no more pages are walked."""
        if self.ep.kind != "member" or p.count is None or p.count > self.ep.sizer.size():
            return False
        p.tracker.gaps = [Segment(0, p.count, names={self.ep.value})]
        p.positions = p.count
        return True

    def _windows(self, p: _Pass, first: _Window) -> Iterator[Callable[[], list[Piece]]]:
        """The pages after the first, each sized when it starts. When nothing runs ahead
        (one in flight) and the server has shown that it reorders members (more gaps than
        cut segments that checked out), a page starts at the last cut of the one before
        if that re-reads at most half a page: the member the boundary would cut then
        comes in one request instead of a gap to fill."""
        ep, last = self.ep, first
        start = first.end()
        while p.count is None or start < p.count:
            size = ep.sizer.size(ep.client.page_size)
            if last.pieces is not None and last.pieces:
                start = last.end()
                cut = last_cut(last.offset, _names(last.pieces))
                reorders = len(p.tracker.gaps) > p.tracker.verified
                if reorders and cut is not None and cut > last.offset and start - cut <= size // 2:
                    start = cut
                if p.count is not None and start >= p.count:
                    return
            window = _Window(start, size)
            yield _window_call(ep, window)
            last, start = window, start + size

    def _piece(self, piece: Piece, p: _Pass) -> Iterator[DataFile]:
        """One answer of the walk: check it against the walk, parse it, feed the segments."""
        page, results = piece.page, piece.results
        if piece.offset == 0 and p.count is None and not p.positions:
            p.count = count_of(page)
        expected = piece.limit if p.count is None else min(piece.limit, p.count - piece.offset)
        if count_of(page) != p.count or piece.offset > p.positions or len(results) != expected:
            p.doubt()
        last = check_next(page, self.ep.url, piece.offset)
        parsed = self.ep.take(piece, p.ids)
        p.stale = 0 if parsed.fresh else p.stale + 1
        p.tracker.add(piece.offset, parsed.names, parsed.ids, parsed.projects)
        p.positions = p.tracker.frontier
        p.over = last or not results or p.stale >= MAX_STALE_PAGES
        yield from parsed.files


def _window_call(ep: Endpoint, window: _Window) -> Callable[[], list[Piece]]:
    def call() -> list[Piece]:
        window.pieces = ep.fetch(window.offset, window.limit)
        return window.pieces

    return call


def _names(pieces: list[Piece]) -> list[str | None]:
    """The username at each position of consecutive pieces (None: unknown)."""
    out: list[str | None] = []
    for piece in pieces:
        for item in piece.results:
            user = item.get("user") if isinstance(item, dict) else None
            name = user.get("username") if isinstance(user, dict) else None
            out.append(name if isinstance(name, str) else None)
    return out


def check_scope(client: Client, kind: str, value: str) -> Callable[[], None]:
    """A hook for a path endpoint's 500 (the server's answer to an unknown id): asks the
    JSON detail endpoint whether the id is simply unknown, and then says so."""

    def check() -> None:
        detail = {
            "project": f"/api/public/project/{value}/",
            "member": f"/api/public/member/{value}/",
            "datatype": f"/api/public/datatype/{value}/",
        }.get(kind)
        if detail is None:
            return
        try:
            client.get_json(client.url(detail))
        except NotFoundError:
            raise NotFoundError(
                f"{kind} {value} not found",
                hint=f"'ohpub list {kind}s' shows the public {kind}s",
            ) from None
        except OhpubError:
            return

    return check


def crawl_files(client: Client, flt: FileFilter, report: ListingReport) -> Iterator[DataFile]:
    """Every public file in scope, exactly once, streamed as pages arrive (Client.iter_files)."""
    seen: set[int] = set()
    rejected_keys: set[Any] = set()
    complete = True
    before = client.sizer.begin()
    stopped = False
    try:
        for path, kind, value in flt.scope_paths():
            check = check_scope(client, kind, value) if kind != "all" else None
            ep = Endpoint(client, path, kind, value, check, flt, report, seen, rejected_keys)
            crawl = EndpointCrawl(ep, client.max_crawls)
            yield from crawl.run()
            complete = complete and crawl.complete
    except GeneratorExit:  # the consumer stopped (``--limit``, a closed pipe): no summary
        stopped = True
        raise
    finally:
        report.retried_smaller += client.sizer.stats.failures - before.failures
        report.sizing = client.sizer.summary(before)
        if not stopped:
            log.info("%s", report.sizing)
    report.complete = complete
    report.finished = True
    log.info("%s", listing_summary(report))


def listing_summary(report: ListingReport) -> str:
    """The log's line about a listing, in a reader's words: ``listing done: 31 files,
    complete, 1 request`` (and, when they happened, the stretches asked again, the
    requests that timed out and were asked again smaller, the malformed records left
    out). How its requests were sized is the line before it (``report.sizing``)."""
    n = report.requests
    parts = [
        f"listing done: {plural(report.unique, 'file')}",
        "complete" if report.complete else "INCOMPLETE (some files may be missing)",
        f"{plural(n, 'request')} ({report.records} records sent)",
    ]
    if report.crawls > 1:
        parts.append(f"read in {report.crawls} passes over the pages")
    if report.snapshots:
        k = report.snapshots
        parts.append(
            f"{plural(k, 'request')} filling the stretches that page boundaries cut "
            f"({report.snapshot_records} records)"
        )
    if report.retried_smaller:
        parts.append(f"{plural(report.retried_smaller, 'request')} asked again smaller")
    if report.rejected:
        parts.append(f"{len(report.rejected)} malformed records left out")
    return ", ".join(parts)


def walk_objects(client: Client, path: str) -> Iterator[dict[str, Any]]:
    """Every page of a small object list (projects, datatypes, members), bounded by what
    arrives: an empty page, ``next: null``, or pages that bring nothing new end it."""
    url = client.url(path)
    size = min(client.page_size, OBJECT_PAGE)
    seen: set[str] = set()
    offset, stale = 0, 0
    while stale < MAX_STALE_PAGES:
        params: dict[str, Any] = {"limit": size, **({"offset": offset} if offset else {})}
        page = client.list_page(url, params, None)
        last = check_next(page, url, offset)
        fresh = False
        for item in page["results"]:
            if not isinstance(item, dict) or not item:
                continue
            ident = str(item.get("id", item.get("username")))
            if ident in seen:
                continue
            seen.add(ident)
            fresh = True
            yield item
        stale = 0 if fresh else stale + 1
        if last or not page["results"]:
            return
        offset += len(page["results"])


__all__ = [
    "ListingReport",
    "EndpointCrawl",
    "crawl_files",
    "walk_objects",
    "check_scope",
    "listing_summary",
    "prefetch",
    "SegmentTracker",
    "MAX_STALE_PAGES",
]
