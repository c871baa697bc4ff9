"""A thin client for the Open Humans public data API.

One ``requests.Session`` carries every request. Requests to Open Humans itself
(listing pages, detail lookups, the download view's 302) share a small
concurrency limit, because that is one Django site behind a router; transfers
from the storage host do not pass through it (the caller bounds them).

The server's traps, and where they are handled:
- query filters are ignored, so filters go into the PATH and every item is
  checked again on this side (``FileFilter.matches``);
- paging order is unstable, so items are de-duplicated by id and the crawl is
  repeated (bounded) while fewer unique ids than ``count`` came back;
- unknown ids on a path endpoint give an HTML 500, so a 500 there is checked
  against the JSON detail endpoint and turned into "project 999 not found";
- error pages are HTML, so a body is only parsed as JSON when it is JSON.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urljoin, urlsplit, urlunsplit

import requests

from ohpub import __version__
from ohpub.config import DEFAULT_BASE_URL, RetryPolicy
from ohpub.errors import (
    KeyRefusedError,
    NetworkError,
    NotFoundError,
    OhpubError,
    ServerError,
    UnavailableError,
    UsageError,
)
from ohpub.http import (
    RETRY_STATUSES,
    TRANSPORT_ERRORS,
    Failure,
    Retrier,
    describe_exception,
    failure_of,
    gave_up_note,
    parse_retry_after,
    redact,
)
from ohpub.records import DataFile, RecordError, parse_datafile

log = logging.getLogger("ohpub")
T = TypeVar("T")

USER_AGENT = (
    f"ohpub/{__version__} (Open Humans public data mirror; python-requests/{requests.__version__})"
)
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_BYTES = 16 * 1024 * 1024
"""A real page of 500 files is about 350 kB; anything this large is not a listing page."""


@dataclass
class FileFilter:
    """What the user asked for. Values of one filter OR together; filters AND together."""

    projects: tuple[int, ...] = ()
    users: tuple[str, ...] = ()
    datatypes: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, f: DataFile) -> bool:
        """Every requested filter, checked on the client: the server ignores query filters."""
        if self.projects and f.project_id not in self.projects:
            return False
        if self.users and f.username not in self.users:
            return False
        if self.datatypes and not set(self.datatypes) & set(f.datatype_ids):
            return False
        if self.tags and not set(self.tags) & set(f.tags):
            return False
        if self.names and not any(fnmatch.fnmatchcase(f.basename, g) for g in self.names):
            return False
        if self.since is not None and f.created < self.since:
            return False
        return not (self.until is not None and f.created >= self.until)

    def scope_paths(self) -> list[tuple[str, str, str]]:
        """The path endpoints to crawl, as (path, kind, value) with kind naming the filter.

        The narrowest filter goes into the path (a member has fewer files than a project);
        the rest are applied by ``matches``.
        """
        if self.users:
            return [(f"/api/public/member/{u}/datafiles/", "member", u) for u in self.users]
        if self.projects:
            return [
                (f"/api/public/project/{p}/datafiles/", "project", str(p)) for p in self.projects
            ]
        if self.datatypes:
            return [
                (f"/api/public/datatype/{d}/datafiles/", "datatype", str(d)) for d in self.datatypes
            ]
        return [("/api/public/datafiles/", "all", "")]

    def scope_key(self) -> str:
        """A stable name of the listing scope (what a complete listing covers)."""
        return json.dumps(
            {
                "projects": sorted(self.projects),
                "users": sorted(self.users),
                "datatypes": sorted(self.datatypes),
                "tags": sorted(self.tags),
                "names": sorted(self.names),
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
            },
            sort_keys=True,
        )


@dataclass
class ListingReport:
    """How a file listing went; the mirror needs it before it may delete anything."""

    expected: int = 0
    unique: int = 0
    crawls: int = 0
    rejected: int = 0
    complete: bool = False
    warnings: list[str] = field(default_factory=list)


class Client:
    """Open Humans public API over one ``requests.Session``."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        api_concurrency: int = 4,
        pool_size: int = 16,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_crawls: int = 4,
        single_page_max: int = 5000,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(
                f"invalid base URL {base_url!r}", hint="use e.g. https://www.openhumans.org"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, timeout)
        self.retry = retry or RetryPolicy()
        self.page_size = max(1, page_size)
        self.max_crawls = max(1, max_crawls)
        self.single_page_max = single_page_max
        self.on_warning = on_warning or (lambda msg: log.warning(msg))
        self.api_concurrency = max(1, api_concurrency)
        self._api_slots = threading.BoundedSemaphore(self.api_concurrency)
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=max(pool_size, api_concurrency), max_retries=0
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(
            {"User-Agent": USER_AGENT, "Accept": "application/json", "Accept-Encoding": "identity"}
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- low level ---------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base_url + path

    def request_api(
        self,
        url: str,
        reader: Callable[[requests.Response], T],
        *,
        params: dict[str, Any] | None = None,
        allow_redirects: bool = True,
        on_first_500: Callable[[], None] | None = None,
    ) -> T:
        """GET a URL on Open Humans itself, within the API concurrency limit, with retries.

        ``reader`` consumes the response while the concurrency slot is held, so the body
        transfer counts against the limit too. Answers in ``http.RETRY_STATUSES`` are
        retried through the one retry engine (``http.Retrier``); every other answer goes to
        ``reader`` to interpret. ``on_first_500`` runs once on the first 500 (outside the
        slot), so an HTML 500 for an unknown id can become "not found" without waiting
        through retries.
        """

        def give_up(failure: Failure, attempts: int) -> OhpubError:
            cls = NetworkError if failure.status is None else ServerError
            return cls(
                f"{failure.reason} from {redact(url)} ({gave_up_note(failure, attempts)})",
                hint=_hint_for(self.base_url, failure.status is None),
            )

        retry = Retrier(self.retry, url, give_up)
        while True:
            with self._api_slots:
                try:
                    resp = self.session.get(
                        url,
                        params=params,
                        timeout=self.timeout,
                        allow_redirects=allow_redirects,
                        stream=True,
                    )
                except requests.exceptions.InvalidURL as exc:
                    raise UsageError(f"invalid URL {redact(url)}: {exc}") from exc
                except TRANSPORT_ERRORS as exc:
                    failure = failure_of(exc, url)
                else:
                    with resp:
                        if resp.status_code not in RETRY_STATUSES:
                            return reader(resp)
                        failure = Failure(
                            f"HTTP {resp.status_code}{_html_title(resp)}",
                            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                            status=resp.status_code,
                        )
            if failure.status == 500 and on_first_500 is not None:
                hook, on_first_500 = on_first_500, None
                hook()
            retry.wait(failure, _with_params(url, params) if params else url)

    def get_json(
        self,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        on_first_500: Callable[[], None] | None = None,
    ) -> Any:
        """GET and parse JSON, refusing HTML pages, truncated JSON and oversized bodies."""

        def read(resp: requests.Response) -> bytes:
            if resp.status_code == 404:
                raise NotFoundError(f"not found: {redact(resp.url)}")
            if resp.status_code >= 400:
                raise ServerError(
                    f"HTTP {resp.status_code} from {redact(resp.url)}{_html_title(resp)}"
                )
            ctype = resp.headers.get("Content-Type", "")
            if "json" not in ctype.lower():
                raise ServerError(
                    f"expected JSON from {redact(resp.url)} but got {ctype or 'no content type'}",
                    hint="is --base-url an Open Humans server?",
                )
            return _read_capped(resp, MAX_PAGE_BYTES)

        body = self.request_api(url, read, params=params, on_first_500=on_first_500)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ServerError(f"invalid JSON from {redact(url)}: {exc}") from exc

    # -- listings -----------------------------------------------------------------------------

    def _page(
        self, url: str, params: dict[str, Any] | None, check: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        page = self.get_json(url, params=params, on_first_500=check)
        if not isinstance(page, dict) or not isinstance(page.get("results"), list):
            raise ServerError(f"unexpected listing page from {redact(url)}: not a page object")
        return page

    def _pages(
        self,
        path: str,
        check: Callable[[], None] | None = None,
        limit: int | None = None,
        shift: int = 0,
    ) -> Iterator[dict[str, Any]]:
        """Every page of one list endpoint, in order, refusing loops.

        The first page tells ``count``; when its ``next`` link is the plain next offset,
        the remaining pages are fetched a few at a time (within the Open Humans limit)
        instead of one round trip after another. Anything unexpected falls back to
        following ``next`` links one by one, with loop detection. ``shift`` makes the first
        page that many items long, so every later boundary moves by ``shift`` items.
        """
        size = limit or self.page_size
        first_limit = shift or size
        url = self.url(path)
        page = self._page(url, {"limit": first_limit}, check)
        yield page
        nxt = page.get("next")
        if nxt is None:
            return
        count = page.get("count")
        if isinstance(count, int) and _query_int(nxt, "offset") == first_limit:
            last = yield from self._parallel_pages(path, size, first_limit, count)
            if last is None or last.get("next") is None:
                return
            nxt = last["next"]  # the listing grew during the crawl: follow it from here
        elif shift:
            nxt = _with_params(url, {"limit": size, "offset": shift})
        yield from self._follow(_with_params(url, {"limit": first_limit}), nxt)

    def _parallel_pages(
        self, path: str, size: int, start: int, count: int
    ) -> Generator[dict[str, Any], None, dict[str, Any] | None]:
        """Pages at offsets start, start+size, ... < count, fetched ahead, yielded in order.

        Nothing is fetched before the consumer asks for the next page (``--limit`` must stop
        the crawl), and pages not yet consumed are cancelled when the consumer stops.
        """
        offsets = iter(range(start, count, size))
        width = max(1, self.api_concurrency)
        pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="ohpub-list")
        ahead: deque[Future[dict[str, Any]]] = deque()

        def submit() -> None:
            off = next(offsets, None)
            if off is not None:
                params = {"limit": size, "offset": off}
                ahead.append(pool.submit(self._page, self.url(path), params))

        last: dict[str, Any] | None = None
        try:
            for _ in range(width):
                submit()
            while ahead:
                last = ahead.popleft().result()
                submit()
                yield last
        finally:
            for fut in ahead:
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
        return last

    def _follow(self, prev_url: str, nxt: Any) -> Iterator[dict[str, Any]]:
        """Follow ``next`` links one page at a time, refusing a link that loops."""
        seen: set[str] = {_page_key(prev_url)}
        url = prev_url
        while nxt is not None:
            if not isinstance(nxt, str):
                raise ServerError(f"bad 'next' link in page from {redact(url)}")
            nxt = urljoin(url, nxt)
            key = _page_key(nxt)
            if key in seen:
                raise ServerError(f"paging loop: 'next' points back to {redact(nxt)}")
            seen.add(key)
            url = nxt
            page = self._page(url, None)
            yield page
            nxt = page.get("next")

    def _check_scope(self, kind: str, value: str) -> Callable[[], None]:
        """A hook for a path endpoint's 500: is the id simply unknown?"""

        def check() -> None:
            detail = {
                "project": f"/api/public/project/{value}/",
                "member": f"/api/public/member/{value}/",
                "datatype": f"/api/public/datatype/{value}/",
            }.get(kind)
            if detail is None:
                return
            try:
                self.get_json(self.url(detail))
            except NotFoundError:
                raise NotFoundError(
                    f"{kind} {value} not found",
                    hint=f"'ohpub list {kind}s' shows the public {kind}s",
                ) from None
            except OhpubError:
                return

        return check

    def iter_files(
        self, flt: FileFilter | None = None, report: ListingReport | None = None
    ) -> Iterator[DataFile]:
        """Every public file in scope, exactly once, streamed as pages arrive.

        Re-crawls (at most ``max_crawls`` times per endpoint) while fewer unique ids than the
        server's ``count`` came back, since offset paging over an unstable order skips files.
        ``report`` is filled in as the crawl goes; ``report.complete`` is only True when
        every endpoint was crawled without a gap.
        """
        flt = flt or FileFilter()
        report = report if report is not None else ListingReport()
        seen: set[int] = set()
        complete = True
        for path, kind, value in flt.scope_paths():
            check = self._check_scope(kind, value) if kind != "all" else None
            endpoint_ids: set[int] = set()
            expected = 0
            for crawl in range(self.max_crawls):
                report.crawls += 1
                rejected: set[str] = set()
                limit, shift = self._crawl_plan(crawl, expected)
                for page in self._pages(path, check, limit, shift):
                    listed_at = time.time()
                    count = page.get("count")
                    if isinstance(count, int):
                        expected = count
                    for item in page["results"]:
                        if item == {}:
                            continue
                        if isinstance(item, dict) and item.get("id") in endpoint_ids:
                            continue  # a re-crawl meets most files again: skip the parsing
                        try:
                            f = parse_datafile(item, listed_at=listed_at)
                        except RecordError as exc:
                            key = json.dumps(item, sort_keys=True, default=str)[:200]
                            if key not in rejected and crawl == 0:
                                report.rejected += 1
                                self.on_warning(f"skipping a malformed listing item: {exc}")
                            rejected.add(key)
                            continue
                        endpoint_ids.add(f.id)
                        if f.id in seen:
                            continue
                        seen.add(f.id)
                        if flt.matches(f):
                            report.unique += 1
                            yield f
                if len(endpoint_ids) + len(rejected) >= expected:
                    break
                log.info(
                    "listing %s: %d of %d unique after crawl %d; crawling again",
                    path,
                    len(endpoint_ids),
                    expected,
                    crawl + 1,
                )
            report.expected += expected
            if len(endpoint_ids) + len(rejected) < expected:
                complete = False
                report.warnings.append(
                    f"listing {path} stayed incomplete: {len(endpoint_ids)} of {expected} files "
                    f"after {self.max_crawls} crawls"
                )
                self.on_warning(report.warnings[-1])
        report.complete = complete

    def _crawl_plan(self, crawl: int, expected: int) -> tuple[int, int]:
        """Page size and boundary shift for crawl number ``crawl``.

        Files are lost only where one member's files straddle a page boundary (their order
        changes on every request). A re-crawl therefore moves the boundaries: one single
        page holding everything when the listing is small enough (the API has no maximum
        page size, and one page is one consistent snapshot), otherwise the same pages
        shifted by half a page, then a quarter, then three quarters, so that a member cut
        by one crawl lies inside a page of the next.
        """
        if crawl == 0:
            return self.page_size, 0
        if expected + 100 <= self.single_page_max:
            return max(self.page_size, expected + 100), 0
        fractions = (0.5, 0.25, 0.75, 0.125, 0.375, 0.625, 0.875)
        shift = int(self.page_size * fractions[(crawl - 1) % len(fractions)])
        return self.page_size, max(1, shift)

    def iter_objects(self, kind: str) -> Iterator[dict[str, Any]]:
        """Projects, datatypes or members, as the server sends them."""
        path = {
            "projects": "/api/public/projects/",
            "datatypes": "/api/public/datatypes/",
            "members": "/api/public/members/",
        }[kind]
        seen: set[str] = set()
        for page in self._pages(path):
            for item in page["results"]:
                if not isinstance(item, dict) or not item:
                    continue
                ident = str(item.get("id", item.get("username")))
                if ident in seen:
                    continue
                seen.add(ident)
                yield item

    def get_file(self, file_id: int) -> DataFile:
        """The detail record of one file, which also mints a fresh download key."""
        listed_at = time.time()
        try:
            obj = self.get_json(self.url(f"/api/public/datafile/{file_id}/"))
        except NotFoundError:
            raise NotFoundError(f"file {file_id} not found (deleted or not public)") from None
        try:
            return parse_datafile(obj, listed_at=listed_at)
        except RecordError as exc:
            raise ServerError(f"file {file_id}: malformed record: {exc}") from exc

    # -- downloads ----------------------------------------------------------------------------

    def resolve_download(self, f: DataFile) -> str:
        """Follow the download view's 302 to the signed storage URL (without fetching it)."""

        def read(resp: requests.Response) -> tuple[int, str, str]:
            body = resp.text[:2000] if resp.status_code >= 400 else ""
            return resp.status_code, resp.headers.get("Location", ""), body

        status, location, body = self.request_api(f.download_url, read, allow_redirects=False)
        if status in (301, 302, 303, 307, 308):
            target = urljoin(f.download_url, location)
            check_http_url(target, f.id)
            return target
        if status == 403 and "unavailable" in body.lower():
            raise UnavailableError(f"file {f.id} is unavailable on Open Humans")
        if status == 403:
            raise KeyRefusedError(f"file {f.id}: download key refused")
        if status == 404:
            raise UnavailableError(f"file {f.id}: download view answered 404")
        raise ServerError(f"file {f.id}: unexpected HTTP {status} from the download view")

    def open_storage(
        self, url: str, headers: dict[str, str], *, max_hops: int = 3
    ) -> requests.Response:
        """GET the storage URL as a raw stream; redirects are followed by hand (http(s) only)."""
        for _ in range(max_hops + 1):
            resp = self.session.get(
                _keep_dot_segments(url),
                headers=headers,
                stream=True,
                timeout=self.timeout,
                allow_redirects=False,
            )
            if resp.status_code in (301, 302, 303, 307, 308):
                resp.close()
                url = urljoin(url, resp.headers.get("Location", ""))
                check_http_url(url, None)
                continue
            return resp
        raise ServerError(f"too many redirects fetching {redact(url)}")


def _keep_dot_segments(url: str) -> str:
    """An object key may end in an uploader's basename ``.`` or ``..``; an HTTP client would
    resolve those as dot segments and ask for another object. Percent-encoded, they are sent
    as they are (and the storage decodes them back)."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    if not any(s in (".", "..") for s in segments):
        return url
    path = "/".join({".": "%2E", "..": "%2E%2E"}.get(s, s) for s in segments)
    return urlunsplit(parts._replace(path=path))


def check_http_url(url: str, file_id: int | None) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        what = f"file {file_id}: " if file_id is not None else ""
        raise ServerError(f"{what}refusing redirect to a non-http(s) URL ({parts.scheme or '?'}:)")


def _hint_for(base_url: str, network: bool) -> str:
    if network:
        return f"check the network and --base-url ({base_url})"
    return "the server is having trouble; try again later"


def _html_title(resp: requests.Response) -> str:
    try:
        text = resp.raw.read(4096, decode_content=True).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - only decoration for an error message
        return ""
    m = re.search(r"<(?:title|h1)>([^<]{1,120})<", text, re.I)
    return f" ({m.group(1).strip()})" if m else ""


def _read_capped(resp: requests.Response, cap: int) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise ServerError(
            f"page from {redact(resp.url)} is {int(declared)} bytes; refusing > {cap}"
        )
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in resp.iter_content(256 * 1024):
            total += len(chunk)
            if total > cap:
                raise ServerError(f"page from {redact(resp.url)} exceeds {cap} bytes; refusing it")
            chunks.append(chunk)
    except requests.exceptions.RequestException as exc:
        raise NetworkError(f"{describe_exception(exc)} reading {redact(resp.url)}") from exc
    return b"".join(chunks)


def _with_params(url: str, params: dict[str, Any]) -> str:
    req = requests.Request("GET", url, params=params).prepare()
    return req.url or url


def _query_int(url: Any, name: str) -> int | None:
    if not isinstance(url, str):
        return None
    values = parse_qs(urlsplit(url).query).get(name)
    return int(values[-1]) if values and values[-1].isdigit() else None


def _page_key(url: str) -> str:
    """Pages are identified by path + sorted query, so a host change cannot hide a loop."""
    parts = urlsplit(url)
    query = "&".join(sorted(parts.query.split("&"))) if parts.query else ""
    return f"{parts.path}?{query}"
