"""The requests of one listing endpoint: sized, asked again smaller, parsed.

``remote.listing`` decides which positions to ask for (the walk, the requests that fill
its gaps); ``Endpoint.fetch`` asks for them. Every request is sized by the client's
``Sizer`` (``remote.sizing``) and sent once: a timeout or a 5xx is not re-sent unchanged,
the range is asked for again in pieces of at most half the size, after the backoff of
the one retry engine (``http.Retrier``: attempts and time budget, restarted by every
answer). ``Endpoint.take`` parses a page: new matching files to yield, and the username,
id and project at each position for the segments (``remote.segments``).

This module also holds what the listing shares with its callers: the ``Client`` shape it
needs, and ``ListingReport``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

from ohpub.model.cancel import DaemonPool
from ohpub.model.errors import OhpubError, ServerError
from ohpub.model.filters import FileFilter
from ohpub.model.records import DataFile, RecordError, Rejected, parse_datafile
from ohpub.remote.http import Failure, Retrier, abandonable, redact
from ohpub.remote.sizing import Sizer, Tally

T = TypeVar("T")


class Client(Protocol):
    """What the listing needs of the API client (``remote.client.ApiClient``): the client
    imports the listing, so the listing names only this shape of it."""

    page_size: int
    listing_max_records: int
    max_crawls: int
    api_concurrency: int
    sizer: Sizer
    on_warning: Callable[[str], None]

    def url(self, path: str) -> str: ...

    def get_json(
        self,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        on_first_500: Callable[[], None] | None = None,
        give_back: bool = False,
        on_time: Callable[[float], None] | None = None,
    ) -> Any: ...

    def list_page(
        self, url: str, params: dict[str, Any] | None, check: Callable[[], None] | None = None
    ) -> dict[str, Any]: ...

    def retrier(self, url: str) -> Retrier: ...


# -- the report ------------------------------------------------------------------------------


@dataclass
class Missing:
    """A gap that stayed open: positions ``start``-``end`` of an endpoint, the members seen
    there and how many of its files never came back."""

    endpoint: str
    start: int
    end: int
    names: list[str]
    hidden: bool
    missing: int

    def who(self) -> str:
        names = ", ".join(self.names[:3]) + (
            f" and {len(self.names) - 3} more" if len(self.names) > 3 else ""
        )
        if not self.names:
            return "hidden-membership files"
        who = ("member " if len(self.names) == 1 else "members ") + names
        return who + (" (with hidden-membership files)" if self.hidden else "")

    def message(self) -> str:
        return (
            f"{self.who()}: {self.missing} of {self.end - self.start} files missing "
            f"({self.endpoint} positions {self.start}-{self.end})"
        )


@dataclass
class EndpointResult:
    """What one endpoint's listing established: complete, or the members whose files it
    listed completely (``names``)."""

    kind: str
    value: str
    complete: bool = False
    names: set[str] = field(default_factory=set)

    def covers(self, username: str | None, project_id: int | None) -> bool:
        """Could this endpoint list a file of the directory ``username/project_id``?"""
        if self.kind == "project":
            return project_id is not None and str(project_id) == self.value
        if self.kind == "member":
            return username == self.value
        return True  # the whole listing, or a datatype (of any directory)

    def lists_completely(self, username: str | None) -> bool:
        return self.complete or (username is not None and username in self.names)


@dataclass
class ListingReport:
    """How a file listing went; the mirror needs it before it may delete anything.

    ``complete`` is True only when every endpoint's positions were all covered by
    consistent responses; ``rejected`` holds every item that could not become a file
    (each also reported through the client's ``on_warning``), which a caller must treat
    as a failure. ``finished`` is False when the consumer stopped the listing early.
    An incomplete listing still says which directories it listed completely
    (``directory_complete``) and which members miss how many files (``incomplete``).
    """

    expected: int = 0
    """Sum of the endpoints' ``count`` (from the last pass of each)."""
    unique: int = 0
    """Files yielded (distinct ids that matched the filter)."""
    crawls: int = 0
    """Passes over endpoints: one per endpoint unless the listing changed meanwhile."""
    answered: Tally = field(default_factory=Tally)
    """Listing requests answered in all (pages and the requests that filled gaps), and the
    records the server sent in them (each costs the real server about 8 ms)."""
    gap_fills: Tally = field(default_factory=Tally)
    """Of those, the requests that filled gaps (a segment cut by page boundaries, asked for
    again), and their records."""
    verified_segments: int = 0
    """Segments cut by a page boundary that needed no more requests (no file lost there)."""
    retried_smaller: int = 0
    """Requests that timed out or failed and whose range was asked for again smaller."""
    rejected: list[Rejected] = field(default_factory=list)
    complete: bool = False
    finished: bool = False
    warnings: list[str] = field(default_factory=list)
    incomplete: list[Missing] = field(default_factory=list)
    endpoints: list[EndpointResult] = field(default_factory=list)
    sizing: str = ""
    """The sizer's summary line (``remote.sizing``)."""

    @property
    def requests(self) -> int:
        return self.answered.requests

    @property
    def records(self) -> int:
        return self.answered.records

    @property
    def snapshots(self) -> int:
        return self.gap_fills.requests

    @property
    def snapshot_records(self) -> int:
        return self.gap_fills.records

    def directory_complete(self, username: str | None, project_id: int | None) -> bool:
        """Did the listing list every file of ``username/project_id`` in scope (so that its
        names are certain)? Always True for a complete listing."""
        if self.complete:
            return True
        relevant = [e for e in self.endpoints if e.covers(username, project_id)]
        return bool(relevant) and all(e.lists_completely(username) for e in relevant)

    def missing_text(self, most: int = 4) -> str:
        """``member a: 12 of 1000 files missing (...); ...`` for an error line."""
        parts = [m.message() for m in self.incomplete[:most]]
        if len(self.incomplete) > most:
            parts.append(f"and {len(self.incomplete) - most} more gaps")
        return "; ".join(parts)


# -- fetching --------------------------------------------------------------------------------


def prefetch(calls: Iterable[Callable[[], T]], width: Callable[[], int], most: int) -> Iterator[T]:
    """Results of ``calls`` in order, up to ``width()`` (at most ``most``) running ahead
    in threads; ``width`` is asked again before each call starts (the sizer's AIMD).

    Nothing starts before the consumer asks for the first result, and calls not yet
    consumed are cancelled when the consumer stops (``--limit`` must stop the crawl). A
    call is taken from ``calls`` only when it can start, after the result before it was
    taken out: the walk places its next page from what the last one showed. The threads
    are daemons (``model.cancel.DaemonPool``): a page still in flight when the run is
    interrupted does not hold the process up; its retries end on the client's token.
    """
    it = iter(calls)
    pool = DaemonPool(most, "ohpub-list")
    ahead: deque[Future[T]] = deque()
    stop = threading.Event()  # set when the consumer goes: running calls stop retrying
    done = False

    def fill() -> None:
        nonlocal done
        while not done and len(ahead) < max(1, min(most, width())):
            call = next(it, None)
            if call is None:
                done = True
                return
            ahead.append(pool.submit(abandonable(stop, call)))

    try:
        fill()
        while ahead:
            result = ahead.popleft().result()
            fill()
            yield result
    finally:
        stop.set()
        for fut in ahead:
            fut.cancel()
        pool.shutdown(wait=0, cancel_futures=True)


def count_of(page: dict[str, Any]) -> int | None:
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
class Piece:
    """One answered listing request: positions ``offset``.. of ``page``, asked for with
    ``limit``; ``asked`` is the time before it (the keys it minted are younger)."""

    offset: int
    limit: int
    page: dict[str, Any]
    asked: float

    @property
    def results(self) -> list[Any]:
        return self.page["results"]  # type: ignore[no-any-return]


@dataclass
class Parsed:
    """What one piece showed: per position its username, id and project, and the new
    files in scope (to yield)."""

    names: list[str | None]
    ids: list[int | None]
    projects: list[int | None]
    files: list[DataFile]
    fresh: bool
    """An id new to the pass came back."""


def _project_of(item: dict[str, Any]) -> int | None:
    url = item.get("source_project")
    if not isinstance(url, str):
        return None
    tail = url.rstrip("/").rpartition("/")[2]
    return int(tail) if tail.isascii() and tail.isdigit() and len(tail) < 19 else None


class FailedAttempt(OhpubError):
    """One attempt of a request sent with ``give_back`` failed in a way worth another
    attempt (a 5xx, 408, 429, a timeout, a broken connection): the caller decides what to
    send next (the listing asks again smaller) and waits through its own ``Retrier``."""

    def __init__(self, failure: Failure, seconds: float) -> None:
        super().__init__(failure.reason)
        self.failure = failure
        self.seconds = seconds


def _split(offset: int, limit: int, size: int) -> list[tuple[int, int]]:
    size = max(1, size)
    return [(o, min(size, offset + limit - o)) for o in range(offset, offset + limit, size)]


def _once(hook: Callable[[], None] | None) -> Callable[[], None] | None:
    """The scope check runs on the first 500 of an endpoint, not on every timeout."""
    if hook is None:
        return None
    ran = threading.Event()

    def run() -> None:
        if not ran.is_set():
            ran.set()
            hook()

    return run


class Endpoint:
    """One path endpoint of a listing (``/api/public/datafiles/``, a project's, a
    member's, a datatype's): its requests and its items."""

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
        self.sizer = client.sizer
        self.path = path
        self.url = client.url(path)
        self.kind, self.value = kind, value
        self.check = _once(check)
        self.flt = flt
        self.report = report
        self.seen = seen
        self.rejected_keys = rejected_keys
        self.ends: set[int] = set()
        """``offset + limit`` of every request asked: on a server that orders a member's
        files by that end (reference section 6), the same end means the same order."""
        self._lock = threading.Lock()

    def sibling(self, path: str, kind: str, value: str) -> Endpoint:
        """Another endpoint of the same listing (same filter, report and seen ids)."""
        return Endpoint(
            self.client,
            path,
            kind,
            value,
            None,
            self.flt,
            self.report,
            self.seen,
            self.rejected_keys,
        )

    # -- requests ----------------------------------------------------------------------------

    def fetch(self, offset: int, limit: int) -> list[Piece]:
        """Positions ``offset``.. ``offset + limit`` in one request or, after a timeout or
        a 5xx, in smaller ones (never the same heavy request again), in order. Stops after
        a short answer (the listing ends there, or moved). Raises the failure when the
        retry engine gives up (attempts and time budget, restarted by every answer)."""
        pieces: list[Piece] = []
        todo = deque([(offset, max(1, limit))])
        retry = self.client.retrier(self.url)
        while todo:
            off, lim = todo.popleft()
            params: dict[str, Any] = {"limit": lim, **({"offset": off} if off else {})}
            with self._lock:
                self.ends.add(off + lim)
            asked = time.time()
            token = self.sizer.start()
            try:
                page, took = self._request(params)
            except FailedAttempt as exc:
                size = self.sizer.failed(token, lim, exc.seconds, exc.failure.reason)
                shown = f"{self.url}?" + "&".join(f"{k}={v}" for k, v in params.items())
                retry.wait(exc.failure, shown)
                todo.extendleft(reversed(_split(off, lim, size)))
                continue
            except BaseException:
                self.sizer.gone(token)
                raise
            retry.progress()
            n = len(page["results"])
            self.sizer.answered(token, n, took)
            pieces.append(Piece(off, lim, page, asked))
            if n < lim:
                break
        return pieces

    def _request(self, params: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """One listing request, not retried (``FailedAttempt`` on a failure worth another
        attempt), and the seconds the server took to answer it."""
        took: list[float] = []
        page = self.client.get_json(
            self.url, params=params, on_first_500=self.check, give_back=True, on_time=took.append
        )
        if not isinstance(page, dict) or not isinstance(page.get("results"), list):
            raise ServerError(f"unexpected listing page from {redact(self.url)}: not a page object")
        return page, took[0] if took else 0.0

    def used(self, end: int) -> bool:
        with self._lock:
            return end in self.ends

    # -- items ---------------------------------------------------------------------------------

    def take(self, piece: Piece, pass_ids: set[int] | None = None) -> Parsed:
        """Parse one piece (counted in the report); ``pass_ids`` collects the ids of a
        pass, to tell a page that brought something new."""
        results = piece.results
        self.report.answered.add(len(results))  # counted here, in the consumer's thread
        out = Parsed([], [], [], [], False)
        for i, item in enumerate(results):
            name, fid, project, f = self._item(item, piece.offset + i, piece.asked)
            out.names.append(name)
            out.ids.append(fid)
            out.projects.append(project)
            if fid is not None and pass_ids is not None and fid not in pass_ids:
                pass_ids.add(fid)
                out.fresh = True
            if f is not None:
                out.files.append(f)
        return out

    def in_scope(self, f: DataFile) -> bool:
        """Would this endpoint list ``f``? (A member's files seen through the member
        endpoint count for a project's listing only when they are that project's.)"""
        if self.kind == "project":
            return str(f.project_id) == self.value
        if self.kind == "member":
            return f.username == self.value
        if self.kind == "datatype":
            return int(self.value) in f.datatype_ids
        return True

    def _item(
        self, item: Any, pos: int, asked: float
    ) -> tuple[str | None, int | None, int | None, DataFile | None]:
        """(username, id, project, new file to yield) of one item; rejects are recorded."""
        if isinstance(item, dict):
            fid = item.get("id")
            if isinstance(fid, int) and fid in self.seen:
                user = item.get("user")
                name = user.get("username") if isinstance(user, dict) else None
                return (name if isinstance(name, str) else None), fid, _project_of(item), None
        try:
            f = parse_datafile(item, listed_at=asked)
            if not self.in_scope(f):
                raise RecordError(self._contradiction(f), f.id)
        except RecordError as exc:
            self._reject(item, pos, exc)
            return None, exc.file_id, None, None
        self.seen.add(f.id)
        if not self.flt.matches(f):
            return f.username, f.id, f.project_id, None
        self.report.unique += 1
        return f.username, f.id, f.project_id, f

    def _contradiction(self, f: DataFile) -> str:
        """A record a path endpoint lists must be in that path's scope: the other filters
        may drop a file quietly, this one must not (the record contradicts the server)."""
        if self.kind == "project":
            return f"listed by {self.path} but its source_project is {f.project_id}"
        if self.kind == "member":
            return f"listed by {self.path} but its user is {f.username!r}"
        return f"listed by {self.path} but its datatypes are {list(f.datatype_ids)}"

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


def _stable_key(item: Any) -> str:
    """Identity of an item without a usable id: the server mints a new download key (and
    reorders ``datatypes``) on every request, so those are left out."""
    if isinstance(item, dict):
        item = {k: v for k, v in item.items() if k not in ("download_url", "datatypes")}
    return json.dumps(item, sort_keys=True, default=str)


__all__ = [
    "Client",
    "Endpoint",
    "EndpointResult",
    "FailedAttempt",
    "ListingReport",
    "Missing",
    "Parsed",
    "Piece",
    "check_next",
    "count_of",
    "prefetch",
]
