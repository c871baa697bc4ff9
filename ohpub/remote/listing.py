"""A complete file listing over an API whose order is by username only.

The server sorts a listing by username and nothing else, so within one member (one
"block" of positions) the order changes on every request, and an offset page boundary
that cuts a block returns a random part of it on each side: some files twice, some never
(the reference notes, sections 3 and 6). Re-walking the same pages never heals that;
only a request whose two edges do not cut a block does.

So one endpoint is listed like this:

1. **One pass** of offset pages (``page_size`` each, a few in flight). For every
   position the pass learns the username there (None for a hidden membership or a
   rejected record). A *cut* is a place between two positions whose usernames are both
   known and differ: the set of files on either side of a cut is the same in every
   request, whatever the order within members.
2. The positions between consecutive cuts form *segments*. A segment inside one page
   came from one request and is complete. A segment that spans a page boundary is
   complete when the pass saw as many distinct ids in it as it has positions (a server
   whose order happens to be stable never needs more).
3. Every other crossing segment is fetched again as **one snapshot request**
   (``offset`` = its first position, ``limit`` = its length). Its edges are cuts, so
   that request returns exactly the segment's files. A member endpoint is one member
   from end to end, so it is asked for as one snapshot at once when it is longer
   than a page.
4. Every response must agree with the pass (same ``count``, full pages). When one does
   not, files were added or removed during the crawl, positions moved, and the endpoint
   is crawled again (at most ``max_passes`` passes), keeping what was already seen.

The crawl is bounded by what arrives, not by ``count``: it ends at an empty page, at
``next: null``, or after ``MAX_STALE_PAGES`` pages in a row without an id new to this
pass; the listing is then incomplete. Any single request is as large as the largest
segment it heals (one member's block plus neighbouring hidden files); the real site's
router cuts requests after 30 s (about 3,000 records), which bounds the members this can
list completely there (README, "Listing guarantees").
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

from ohpub.model.cancel import DaemonPool
from ohpub.model.errors import NotFoundError, OhpubError, ServerError
from ohpub.model.filters import FileFilter
from ohpub.model.records import DataFile, RecordError, Rejected, parse_datafile
from ohpub.remote.http import abandonable, redact

log = logging.getLogger("ohpub")
T = TypeVar("T")

MAX_STALE_PAGES = 3
"""Pages in a row without an id new to the pass that end it (a server that repeats itself)."""
BIG_REQUEST = 3000
"""Records above which one request may outlast the real site's 30 s router timeout."""


class Client(Protocol):
    """What the listing needs of the API client (``remote.client.ApiClient``): the client
    imports the listing, so the listing names only this shape of it."""

    page_size: int
    max_crawls: int
    api_concurrency: int
    on_warning: Callable[[str], None]

    def url(self, path: str) -> str: ...

    def get_json(
        self,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        on_first_500: Callable[[], None] | None = None,
    ) -> Any: ...

    def list_page(
        self, url: str, params: dict[str, Any] | None, check: Callable[[], None] | None = None
    ) -> dict[str, Any]: ...


@dataclass
class ListingReport:
    """How a file listing went; the mirror needs it before it may delete anything.

    ``complete`` is True only when every endpoint's positions were all covered by
    consistent responses; ``rejected`` holds every item that could not become a file
    (each also reported through the client's ``on_warning``), which a caller must treat
    as a failure. ``finished`` is False when the consumer stopped the listing early.
    """

    expected: int = 0
    """Sum of the endpoints' ``count`` (from the last pass of each)."""
    unique: int = 0
    """Files yielded (distinct ids that matched the filter)."""
    crawls: int = 0
    """Passes over endpoints: one per endpoint unless the listing changed meanwhile."""
    requests: int = 0
    """Listing requests in all (pages and snapshots)."""
    records: int = 0
    """Records the server sent in all (each costs the real server about 8 ms)."""
    snapshots: int = 0
    """Extra requests that re-fetched a segment cut by a page boundary in one piece."""
    snapshot_records: int = 0
    verified_segments: int = 0
    """Segments cut by a page boundary that needed no snapshot (no file lost there)."""
    rejected: list[Rejected] = field(default_factory=list)
    complete: bool = False
    finished: bool = False
    warnings: list[str] = field(default_factory=list)


# -- segments ------------------------------------------------------------------------------


def _differ(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a != b


class SegmentTracker:
    """Cuts and segments of one pass, fed page by page in order of offset.

    Holds only the ids of the segment still open (from the last cut seen), so its
    memory is one segment, not the listing. ``windows`` collects the (start, end)
    position ranges that need a snapshot.
    """

    def __init__(self) -> None:
        self.start = 0
        self.ids: list[int | None] = []
        self.crossed = False
        self.last: str | None = None
        self.empty = True
        self.windows: list[tuple[int, int]] = []
        self.verified = 0

    def add(self, offset: int, names: list[str | None], ids: list[int | None]) -> None:
        """The usernames (None: unknown) and ids (None: unusable) of one page at ``offset``."""
        if not names:
            return
        cuts = [i for i in range(1, len(names)) if _differ(names[i - 1], names[i])]
        if self.empty or _differ(self.last, names[0]):
            self._close(offset)
            self.start, self.ids, self.crossed = offset, [], False
        else:
            self.crossed = True
        if cuts:
            self.ids.extend(ids[: cuts[0]])
            self._close(offset + cuts[0])
            self.start, self.ids, self.crossed = offset + cuts[-1], list(ids[cuts[-1] :]), False
        else:
            self.ids.extend(ids)
        self.last, self.empty = names[-1], False

    def finish(self, end: int) -> None:
        self._close(end)
        self.ids = []

    def _close(self, end: int) -> None:
        if not self.crossed:
            return
        distinct = set(self.ids)
        if None in distinct or len(distinct) != end - self.start:
            self.windows.append((self.start, end))
        else:
            self.verified += 1


# -- fetching ------------------------------------------------------------------------------


def prefetch(calls: Iterable[Callable[[], T]], width: int) -> Iterator[T]:
    """Results of ``calls`` in order, up to ``width`` running ahead in threads.

    Nothing starts before the consumer asks for the first result, and calls not yet
    consumed are cancelled when the consumer stops (``--limit`` must stop the crawl). The
    threads are daemons (``model.cancel.DaemonPool``): a page still in flight when the run
    is interrupted does not hold the process up; its retries end on the client's token.
    """
    it = iter(calls)
    pool = DaemonPool(width, "ohpub-list")
    ahead: deque[Future[T]] = deque()
    stop = threading.Event()  # set when the consumer goes: running calls stop retrying
    try:
        for call in it:
            ahead.append(pool.submit(abandonable(stop, call)))
            if len(ahead) >= width:
                break
        while ahead:
            result = ahead.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                ahead.append(pool.submit(abandonable(stop, nxt)))
            yield result
    finally:
        stop.set()
        for fut in ahead:
            fut.cancel()
        pool.shutdown(wait=0, cancel_futures=True)


def _count_of(page: dict[str, Any]) -> int | None:
    count = page.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count
    return None


def _offset_of(url: str) -> int:
    values = parse_qs(urlsplit(url).query).get("offset")
    text = values[-1] if values else "0"
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else 0


def check_next(page: dict[str, Any], url: str, offset: int) -> bool:
    """True when the page says it is the last (``next`` is null); refuses a loop."""
    nxt = page.get("next")
    if nxt is None:
        return True
    if not isinstance(nxt, str):
        raise ServerError(f"bad 'next' link in page from {redact(url)}")
    if _offset_of(nxt) <= offset:
        raise ServerError(f"paging loop: 'next' points back to {redact(nxt)}")
    return False


@dataclass
class _Pass:
    """What one pass over an endpoint established."""

    count: int | None = None
    consistent: bool = True
    positions: int = 0
    tracker: SegmentTracker = field(default_factory=SegmentTracker)
    ids: set[int] = field(default_factory=set)
    stale: int = 0


class EndpointCrawl:
    """The complete listing of one path endpoint (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        path: str,
        kind: str,
        value: str,
        check: Callable[[], None] | None,
        flt: FileFilter,
        report: ListingReport,
        seen: set[int],
        rejected_keys: set[Any],
    ) -> None:
        self.client = client
        self.path = path
        self.url = client.url(path)
        self.whole = kind == "member"  # one member: no cut inside, fetch it whole at once
        self.kind, self.value = kind, value
        self.check = check
        self.flt = flt
        self.report = report
        self.seen = seen
        self.rejected_keys = rejected_keys
        self.size = client.page_size

    # -- the crawl ---------------------------------------------------------------------------

    def run(self) -> Iterator[DataFile]:
        """Yield the endpoint's new files; ``self.complete`` says whether nothing is missing."""
        self.complete = False
        p, n = _Pass(), 0
        for n in range(1, max(1, self.client.max_crawls) + 1):
            self.report.crawls += 1
            p = _Pass()
            yield from self._pass(p)
            if p.consistent:
                self.report.verified_segments += p.tracker.verified
                outcome: bool | None = True
                if p.tracker.windows:
                    outcome = yield from self._snapshots(p.tracker.windows, p)
                if outcome is None:
                    break  # a snapshot failed: asking again would fail the same way
                if outcome:
                    self.report.expected += p.count or 0
                    self.complete = True
                    return
            log.info(
                "listing %s changed during pass %d (count %s, %d positions); listing it again",
                self.path,
                n,
                p.count,
                p.positions,
            )
        self.report.expected += p.count or 0
        self._warn(
            f"listing {self.path} stayed incomplete after {n} passes "
            f"(the server's count says {p.count}, {p.positions} positions came back)"
        )

    def _warn(self, message: str) -> None:
        self.report.warnings.append(message)
        self.client.on_warning(message)

    def _pass(self, p: _Pass) -> Iterator[DataFile]:
        first, asked = self._get(0, self.size)
        p.count = _count_of(first)
        last = check_next(first, self.url, 0)
        yield from self._take(first, 0, p, asked)
        if self.whole and not last and p.count is not None:
            # One member: every boundary cuts it; one request holds it all.
            p.tracker.windows.append((0, p.count))
            p.positions = p.count
            return
        if not last and first["results"]:
            for (page, asked), offset in prefetch(self._page_calls(p), self.client.api_concurrency):
                last = check_next(page, self.url, offset)
                yield from self._take(page, offset, p, asked)
                if last or not page["results"] or p.stale >= MAX_STALE_PAGES:
                    break
        p.tracker.finish(p.positions)
        if p.count is None or p.positions != p.count:
            p.consistent = False

    def _page_calls(
        self, p: _Pass
    ) -> Iterator[Callable[[], tuple[tuple[dict[str, Any], float], int]]]:
        def call(offset: int) -> Callable[[], tuple[tuple[dict[str, Any], float], int]]:
            return lambda: (self._get(offset, self.size), offset)

        offset = self.size
        while p.count is None or offset < p.count:
            yield call(offset)
            offset += self.size

    def _get(self, offset: int, limit: int) -> tuple[dict[str, Any], float]:
        """One listing request, and the time before it (the keys it mints are younger)."""
        params: dict[str, Any] = {"limit": limit}
        if offset:
            params["offset"] = offset
        asked = time.time()
        return self.client.list_page(self.url, params, self.check), asked

    def _take(
        self, page: dict[str, Any], offset: int, p: _Pass, asked: float
    ) -> Iterator[DataFile]:
        """Parse one page's items, yield the new matching files, feed the tracker."""
        results: list[Any] = page["results"]
        self.report.requests += 1  # counted here, in the consumer's thread
        self.report.records += len(results)
        if _count_of(page) != p.count or offset != p.positions:
            p.consistent = False
        expected_len = self.size if p.count is None else min(self.size, p.count - offset)
        if len(results) != expected_len:
            p.consistent = False
        names: list[str | None] = []
        ids: list[int | None] = []
        fresh = False
        for i, item in enumerate(results):
            name, fid, f = self._item(item, offset + i, asked)
            names.append(name)
            ids.append(fid)
            if fid is not None and fid not in p.ids:
                p.ids.add(fid)
                fresh = True
            if f is not None:
                yield f
        p.stale = 0 if fresh else p.stale + 1
        p.tracker.add(offset, names, ids)
        p.positions = offset + len(results)

    def _item(
        self, item: Any, pos: int, asked: float
    ) -> tuple[str | None, int | None, DataFile | None]:
        """(username, id, new file to yield) of one listing item; rejects are recorded."""
        if isinstance(item, dict):
            fid = item.get("id")
            if isinstance(fid, int) and fid in self.seen:
                user = item.get("user")
                name = user.get("username") if isinstance(user, dict) else None
                return (name if isinstance(name, str) else None), fid, None
        try:
            f = parse_datafile(item, listed_at=asked)
            self._check_path_scope(f)
        except RecordError as exc:
            self._reject(item, pos, exc)
            return None, exc.file_id, None
        self.seen.add(f.id)
        if not self.flt.matches(f):
            return f.username, f.id, None
        self.report.unique += 1
        return f.username, f.id, f

    def _check_path_scope(self, f: DataFile) -> None:
        """A record a path endpoint lists must be in that path's scope: the other filters
        may drop a file quietly, this one must not (the record contradicts the server)."""
        if self.kind == "project" and str(f.project_id) != self.value:
            why = f"listed by {self.path} but its source_project is {f.project_id}"
        elif self.kind == "member" and f.username != self.value:
            why = f"listed by {self.path} but its user is {f.username!r}"
        elif self.kind == "datatype" and int(self.value) not in f.datatype_ids:
            why = f"listed by {self.path} but its datatypes are {list(f.datatype_ids)}"
        else:
            return
        raise RecordError(why, f.id)

    def _reject(self, item: Any, pos: int, exc: RecordError) -> None:
        key: Any = exc.file_id
        if key is None:
            key = _stable_key(item)
        if key in self.rejected_keys:
            return
        self.rejected_keys.add(key)
        rej = Rejected(exc.file_id, f"{self.path} position {pos}", str(exc))
        self.report.rejected.append(rej)
        self.client.on_warning(rej.message())

    # -- snapshots ---------------------------------------------------------------------------

    def _snapshots(
        self, windows: list[tuple[int, int]], p: _Pass
    ) -> Generator[DataFile, None, bool | None]:
        """Fetch each window in one request; False: the listing moved; None: one failed."""
        records = sum(e - s for s, e in windows)
        log.info(
            "listing %s: %d segments cut by page boundaries came back with gaps; "
            "%d snapshot requests (%d records)",
            self.path,
            len(windows),
            len(windows),
            records,
        )
        big = max(e - s for s, e in windows)
        if big > BIG_REQUEST:
            log.info(
                "listing %s: one snapshot holds %d records; the real site may cut a request "
                "that large at its 30 s router timeout",
                self.path,
                big,
            )

        Answer = tuple[int, int, tuple[dict[str, Any], float] | OhpubError]

        def call(s: int, e: int) -> Callable[[], Answer]:
            def run() -> Answer:
                try:
                    return s, e, self._get(s, e - s)
                except OhpubError as exc:
                    return s, e, exc

            return run

        ok: bool | None = True
        for s, e, answer in prefetch([call(s, e) for s, e in windows], self.client.api_concurrency):
            self.report.snapshots += 1
            self.report.snapshot_records += e - s
            if isinstance(answer, OhpubError):
                self.report.requests += 1
                self._warn(f"listing {self.path}: snapshot of positions {s}-{e} failed: {answer}")
                ok = None
                continue
            page, asked = answer
            results = page["results"]
            self.report.requests += 1
            self.report.records += len(results)
            if ok and (_count_of(page) != p.count or len(results) != e - s):
                ok = False
            for i, item in enumerate(results):
                f = self._item(item, s + i, asked)[2]
                if f is not None:
                    yield f
        return ok


def _stable_key(item: Any) -> str:
    """Identity of an item without a usable id: the server mints a new download key (and
    reorders ``datatypes``) on every request, so those are left out."""
    if isinstance(item, dict):
        item = {k: v for k, v in item.items() if k not in ("download_url", "datatypes")}
    return json.dumps(item, sort_keys=True, default=str)


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
    for path, kind, value in flt.scope_paths():
        check = check_scope(client, kind, value) if kind != "all" else None
        crawl = EndpointCrawl(client, path, kind, value, check, flt, report, seen, rejected_keys)
        yield from crawl.run()
        complete = complete and crawl.complete
    report.complete = complete
    report.finished = True
    log.info(
        "listing done: %d files (%s), %d requests, %d records, %d passes, %d snapshots "
        "(%d records), %d cut segments needed none, %d rejected items",
        report.unique,
        "complete" if complete else "INCOMPLETE",
        report.requests,
        report.records,
        report.crawls,
        report.snapshots,
        report.snapshot_records,
        report.verified_segments,
        len(report.rejected),
    )


def walk_objects(client: Client, path: str) -> Iterator[dict[str, Any]]:
    """Every page of a small object list (projects, datatypes, members), bounded by what
    arrives: an empty page, ``next: null``, or pages that bring nothing new end it."""
    url = client.url(path)
    size = client.page_size
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
