"""A thin client for the Open Humans public data API.

Each thread that makes requests gets its own ``requests.Session`` (``session``), all
configured the same way and all closed by ``close()``: requests does not promise that one
session is safe to share between threads, and a run has a dozen of them (ARCHITECTURE.md,
"Threads and sessions"). Requests to Open Humans itself (listing pages, detail lookups,
the download view's 302) share a small concurrency limit, because that is one Django
site behind a router; transfers from the storage host do not pass through it (the
caller bounds them). Every wait (that limit, the retry engine's backoff) ends at once when
the Config's cancel token is cancelled (``model.cancel``); ``scoped`` gives a run a view
of the client with a token of its own.

The server's traps, and where they are handled:
- query filters are ignored, so filters go into the PATH and every item is
  checked again on this side (``FileFilter.matches``);
- paging order is by username only, so a page boundary can cut a member's files:
  ``remote.listing`` finds those cuts and heals them with requests sized to the server's
  time limit (``remote.sizing``);
- unknown ids on a path endpoint give an HTML 500, so a 500 there is checked
  against the JSON detail endpoint and turned into "project 999 not found";
- error pages are HTML, so a body is only parsed as JSON when it is JSON.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ohpub.model.cancel import CancelToken
from ohpub.model.config import Config, RetryPolicy
from ohpub.model.errors import (
    NetworkError,
    NotFoundError,
    OhpubError,
    ServerError,
    UsageError,
)
from ohpub.model.filters import FileFilter
from ohpub.model.lazy import lazy_import
from ohpub.model.records import DataFile, RecordError, parse_datafile
from ohpub.model.version import __version__
from ohpub.remote import download, http
from ohpub.remote.endpoint import FailedAttempt
from ohpub.remote.http import (
    RETRY_STATUSES,
    Failure,
    Retrier,
    describe_exception,
    failure_of,
    gave_up_note,
    parse_retry_after,
    redact,
)
from ohpub.remote.listing import ListingReport, crawl_files, walk_objects
from ohpub.remote.sizing import Sizer

if TYPE_CHECKING:
    import requests
else:
    requests = lazy_import("requests")  # imported with the first request (``model.lazy``)

log = logging.getLogger("ohpub")
T = TypeVar("T")


def agent() -> str:
    """The User-Agent of every request (names requests' version: made with the first)."""
    return (
        f"ohpub/{__version__} (Open Humans public data mirror; "
        f"python-requests/{requests.__version__})"
    )


MAX_PAGE_BYTES = 16 * 1024 * 1024
"""A real page of 500 files is about 350 kB; anything this large is not a listing page."""


SessionHook = Callable[..., Any]


class ApiClient:
    """Open Humans public API over one ``requests.Session`` per thread."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        config: Config | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        api_concurrency: int | None = None,
        page_size: int | None = None,
        max_crawls: int = 4,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        """Settings come from ``config`` (the defaults when None); an argument given here
        overrides its field. The Config is kept as ``self.config`` for the layers that
        use this client (the transfer reads its range and key settings there)."""
        given = {
            "base_url": base_url,
            "timeout": timeout,
            "connect_timeout": connect_timeout,
            "retry": retry,
            "api_concurrency": api_concurrency,
            "page_size": page_size,
        }
        cfg = (config or Config()).with_(**{k: v for k, v in given.items() if v is not None})
        self.config = cfg
        base_url = cfg.base_url
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(
                f"invalid base URL {base_url!r}", hint="use e.g. https://www.openhumans.org"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = (min(cfg.connect_timeout, cfg.timeout), cfg.timeout)
        self.retry = cfg.retry
        self.listing_max_records = max(1, cfg.listing_max_records)
        self.page_size = max(1, cfg.page_size or self.listing_max_records)
        """Most records in one page of the listing walk."""
        self.max_crawls = max(1, max_crawls)
        """Passes over one endpoint while the listing changes under the crawl."""
        self.on_warning = on_warning or (lambda msg: log.warning(msg))
        self.api_concurrency = max(1, cfg.api_concurrency)
        self._api_slots = threading.BoundedSemaphore(self.api_concurrency)
        self.sizer = Sizer(limit=cfg.server_time_limit, max_records=self.listing_max_records,
                           max_width=self.api_concurrency)  # fmt: skip
        """Sizes listing requests to the server's time limit (``remote.sizing``)."""
        self.sessions = Sessions()
        """The calling thread's ``requests.Session`` is ``sessions.get()``."""

    @property
    def cancel(self) -> CancelToken:
        """The token every wait of this client gives up on (``Config.cancel``)."""
        return self.config.cancel

    def scoped(self, cancel: CancelToken | None = None) -> ApiClient:
        """This client under another cancel token (by default a child of its own), sharing
        everything else: the sessions, the Open Humans limit. A run works through one, so it
        can stop its own waits (a phase failed) without cancelling the caller's client."""
        view = copy.copy(self)
        view.config = self.config.with_(cancel=cancel or self.cancel.child())
        return view

    def close(self) -> None:
        """Close every session this client made (those of threads still running too)."""
        self.sessions.close()

    def __enter__(self) -> ApiClient:
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
        give_back: bool = False,
        on_time: Callable[[float], None] | None = None,
    ) -> T:
        """GET a URL on Open Humans itself, within the API concurrency limit, with retries.

        ``reader`` consumes the response while the concurrency slot is held, so the body
        transfer counts against the limit too. Answers in ``http.RETRY_STATUSES`` are
        retried through the one retry engine (``http.Retrier``); every other answer goes to
        ``reader`` to interpret. ``on_first_500`` runs once on the first 500 (outside the
        slot), so an HTML 500 for an unknown id can become "not found" without waiting
        through retries. With ``give_back`` nothing is retried here: a failure worth
        another attempt raises ``FailedAttempt`` for the caller to decide what to send next.
        ``on_time`` gets the seconds from sending to the end of ``reader`` (the wait for a
        slot not counted).
        """
        retry = self.retrier(url)
        while True:
            with self.cancel.holding(self._api_slots):
                sent = time.monotonic()
                try:
                    resp = self.sessions.get().get(
                        url,
                        params=params,
                        timeout=self.timeout,
                        allow_redirects=allow_redirects,
                        stream=True,
                    )
                except requests.exceptions.InvalidURL as exc:
                    raise UsageError(f"invalid URL {redact(url)}: {exc}") from exc
                except http.TRANSPORT_ERRORS as exc:
                    failure = failure_of(exc, url)
                else:
                    with resp:
                        if resp.status_code not in RETRY_STATUSES:
                            return _read(reader, resp, sent, give_back, on_time)
                        failure = Failure(
                            f"HTTP {resp.status_code}{_html_title(resp)}",
                            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                            status=resp.status_code,
                        )
                spent = time.monotonic() - sent
            if failure.status == 500 and on_first_500 is not None:
                hook, on_first_500 = on_first_500, None
                hook()
            if give_back and failure.limit != 1:
                raise FailedAttempt(failure, spent)
            retry.wait(failure, _with_params(url, params) if params else url)

    def retrier(self, url: str) -> Retrier:
        """The retry engine for one request to Open Humans (or one listing range asked for
        in smaller pieces): the client's policy, its give-up message and cancel token."""
        return Retrier(self.retry, url, _give_up(url, self.base_url), cancel=self.cancel)

    def get_json(
        self,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        on_first_500: Callable[[], None] | None = None,
        give_back: bool = False,
        on_time: Callable[[float], None] | None = None,
    ) -> Any:
        """GET and parse JSON, refusing HTML pages, truncated JSON and oversized bodies
        (``give_back``, ``on_time``: see ``request_api``)."""

        def read(resp: requests.Response) -> bytes:
            if resp.status_code == 404:
                raise NotFoundError(f"not found: {redact(resp.url)}")
            if resp.status_code >= 400:
                raise ServerError(
                    f"HTTP {resp.status_code}{_html_title(resp)} from {redact(resp.url)}"
                )
            ctype = resp.headers.get("Content-Type", "")
            if "json" not in ctype.lower():
                raise ServerError(
                    f"expected JSON from {redact(resp.url)} but got {ctype or 'no content type'}",
                    hint="is --base-url an Open Humans server?",
                )
            return _read_capped(resp, MAX_PAGE_BYTES)

        body = self.request_api(
            url,
            read,
            params=params,
            on_first_500=on_first_500,
            give_back=give_back,
            on_time=on_time,
        )
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise ServerError(f"invalid JSON from {redact(url)}: {exc}") from exc

    # -- listings -----------------------------------------------------------------------------

    def list_page(
        self, url: str, params: dict[str, Any] | None, check: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """One page of a list endpoint: an object whose ``results`` is a list."""
        page = self.get_json(url, params=params, on_first_500=check)
        return _page_object(page, url)

    def iter_files(
        self, flt: FileFilter | None = None, report: ListingReport | None = None
    ) -> Iterator[DataFile]:
        """Every public file in scope, exactly once, streamed as pages arrive.

        The strategy (one walk in requests sized to the server, then requests that fill
        the gaps page boundaries left, each one the server can answer; again while the
        listing moves) is in ``remote.listing``. ``report`` is filled in as the crawl goes:
        ``complete`` is only True when every endpoint was covered without a gap,
        ``directory_complete`` says which directories an incomplete one covered, and
        ``rejected`` lists every malformed item (each also passed to ``on_warning``), which
        callers must treat as failures.
        """
        return crawl_files(self, flt or FileFilter(), report or ListingReport())

    def iter_objects(self, kind: str) -> Iterator[dict[str, Any]]:
        """Projects, datatypes or members, as the server sends them."""
        return walk_objects(self, f"/api/public/{kind}/")

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
        """Follow the download view's 302 to the signed storage URL (without fetching it):
        a request to Open Humans, within its limit and retried (``remote.download``)."""
        answer = self.request_api(f.download_url, download.read_view, allow_redirects=False)
        return download.storage_url(f, *answer)

    def open_storage(
        self, url: str, headers: dict[str, str], *, max_hops: int = 3
    ) -> requests.Response:
        """GET the storage URL as a raw stream on this thread's session, outside the Open
        Humans limit; redirects followed by hand, http(s) only (``remote.download``)."""
        return download.open_storage(self.sessions.get(), self.timeout, url, headers, max_hops)


class Sessions:
    """One ``requests.Session`` per thread (``get``), all configured alike (``add_hook``:
    ``--verbose``'s log line on every one), closed together.

    A thread's session is closed when the thread object goes (a run's pool threads end
    with the run), so a long-lived client does not collect the sessions of dead threads.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: dict[requests.Session, weakref.finalize[Any, Any]] = {}
        self._hooks: list[SessionHook] = []

    def get(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            return session
        session = _new_session()
        with self._lock:
            session.hooks["response"].extend(self._hooks)
            ender = weakref.finalize(threading.current_thread(), self._drop, session)
            self._open[session] = ender
        self._local.session = session
        return session

    def _drop(self, session: requests.Session) -> None:
        with self._lock:
            self._open.pop(session, None)
        session.close()

    def add_hook(self, hook: SessionHook) -> None:
        """Call ``hook(response, ...)`` for every response of every session."""
        with self._lock:
            self._hooks.append(hook)
            for session in self._open:
                session.hooks["response"].append(hook)

    def close(self) -> None:
        """Close every session; a thread that goes on using the client gets a new one."""
        with self._lock:
            sessions, self._open = self._open, {}
            self._local = threading.local()
        for session, ender in sessions.items():
            ender.detach()
            session.close()


def _new_session() -> requests.Session:
    """A session as every thread's is: no retries of its own (the Retrier retries), a
    connection per host kept alive, identity encoding (bytes are stored as served)."""
    from ohpub.remote.session import EnvOnceSession  # the HTTP stack: with the first session

    session = EnvOnceSession()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=2, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(
        {"User-Agent": agent(), "Accept": "application/json", "Accept-Encoding": "identity"}
    )
    return session


def _give_up(url: str, base_url: str) -> Callable[[Failure, int], OhpubError]:
    def give_up(failure: Failure, attempts: int) -> OhpubError:
        cls = NetworkError if failure.status is None else ServerError
        return cls(
            f"{failure.reason} from {redact(url)} ({gave_up_note(failure, attempts)})",
            hint=_hint_for(base_url, failure.status is None),
        )

    return give_up


def _read(
    reader: Callable[[requests.Response], T],
    resp: requests.Response,
    sent: float,
    give_back: bool,
    on_time: Callable[[float], None] | None,
) -> T:
    """``reader(resp)`` for ``request_api``; with ``give_back`` a body that broke off is a
    ``FailedAttempt`` (as worth another try as a 5xx)."""
    try:
        result = reader(resp)
    except NetworkError as exc:
        if not give_back:
            raise
        raise FailedAttempt(Failure(exc.message), time.monotonic() - sent) from exc
    if on_time is not None:
        on_time(time.monotonic() - sent)
    return result


def _page_object(page: Any, url: str) -> dict[str, Any]:
    if not isinstance(page, dict) or not isinstance(page.get("results"), list):
        raise ServerError(f"unexpected listing page from {redact(url)}: not a page object")
    return page


def _hint_for(base_url: str, network: bool) -> str:
    if network:
        return f"check the network and --base-url {base_url}"
    return "the server is having trouble; try again later"


def _html_title(resp: requests.Response) -> str:
    """The error page's title, to follow ``HTTP 503``: `` Service Unavailable`` when the
    title repeats the code, else ``: <title>`` (never in brackets: the whole reason often
    sits in brackets already, ``failed (HTTP 503 Service Unavailable)``)."""
    try:
        text = resp.raw.read(4096, decode_content=True).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - only decoration for an error message
        return ""
    m = re.search(r"<(?:title|h1)>([^<]{1,120})<", text, re.I)
    if not m:
        return ""
    title = " ".join(m.group(1).split())
    code = str(resp.status_code)
    return f" {title[len(code) :].strip()}" if title.startswith(code + " ") else f": {title}"


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
    """The URL a GET with ``params`` asks for (what a retry message names)."""
    req = requests.Request("GET", url, params=params).prepare()
    return req.url or url
