"""The Python API of ohpub (``import ohpub``): what the CLI does, as functions.

Every function takes an optional ``client`` (an ``ohpub.Client``, reusable, a context
manager); without one, a client is built from the ``OHPUB_*`` environment, as the CLI
would, and closed afterwards. Nothing here prints or configures logging: results are
returned, failures raised as ``ohpub.OhpubError`` subclasses, progress reported to an
optional callback.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import requests
import urllib3

from ohpub.local.index import read_index
from ohpub.mirror.run import Mirror
from ohpub.mirror.types import FileResult, MirrorOptions, MirrorSummary
from ohpub.model.config import Config
from ohpub.model.errors import (
    IncompleteListingError,
    IntegrityError,
    NetworkError,
    OhpubError,
    UnavailableError,
    UsageError,
)
from ohpub.model.filters import DateLike, IdFilter, TextFilter, make_filter, to_datetime
from ohpub.model.records import DataFile, FileStatus
from ohpub.model.units import parse_duration, parse_size
from ohpub.ops import fetch as fetch_mod
from ohpub.ops import status as status_mod
from ohpub.ops import verify as verify_mod
from ohpub.ops.fetch import FetchResult
from ohpub.remote.client import ApiClient
from ohpub.remote.http import describe_exception
from ohpub.remote.listing import ListingReport
from ohpub.transfer.downloader import Downloader

PathLike = str | os.PathLike[str]


class Client(ApiClient):
    """A reusable connection to Open Humans (one HTTP session); also a context manager.

    Unset arguments come from ``config``, or else from the ``OHPUB_*`` environment
    (``OHPUB_BASE_URL``, ``OHPUB_TIMEOUT``, ``OHPUB_API_CONCURRENCY``, ``OHPUB_RETRIES``).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float | None = None,
        api_concurrency: int | None = None,
        retries: int | None = None,
        config: Config | None = None,
    ) -> None:
        cfg = config or Config.from_env()
        if retries is not None:
            cfg = cfg.with_(retry=replace(cfg.retry, attempts=retries))
        super().__init__(base_url, config=cfg, timeout=timeout, api_concurrency=api_concurrency)


@contextlib.contextmanager
def _using(client: ApiClient | None) -> Iterator[ApiClient]:
    """The caller's client, or a default one closed afterwards."""
    if client is not None:
        yield client
        return
    with Client() as own:
        yield own


# -- listings -------------------------------------------------------------------------------


def files(
    *,
    project: IdFilter = None,
    user: TextFilter = None,
    datatype: IdFilter = None,
    tag: TextFilter = None,
    name: TextFilter = None,
    since: DateLike = None,
    until: DateLike = None,
    limit: int | None = None,
    client: ApiClient | None = None,
) -> Iterator[DataFile]:
    """Every matching public data file, once, streamed as the listing arrives.

    Filters are those of ``ohpub list``: values of one filter OR together, filters AND
    together; ``since``/``until`` take a datetime, a date or ``YYYY-MM-DD`` (``until``
    a date includes that day). When the listing could not be completed, the files that
    did arrive are yielded and ``IncompleteListingError`` is raised at the end.
    """
    flt = make_filter(project, user, datatype, tag, name, since, until)
    with _using(client) as c:
        report = ListingReport()
        for n, f in enumerate(c.iter_files(flt, report)):
            if limit is not None and n >= limit:
                return
            yield f
        if not report.complete or report.rejected:
            raise _incomplete(report)


def _incomplete(report: ListingReport) -> IncompleteListingError:
    parts = []
    if report.rejected:
        named = "; ".join(r.message() for r in report.rejected[:3])
        more = f" (and {len(report.rejected) - 3} more)" if len(report.rejected) > 3 else ""
        parts.append(f"{len(report.rejected)} malformed listing records left out: {named}{more}")
    if not report.complete:
        why = report.warnings[-1] if report.warnings else "some files may be missing"
        parts.append(f"listing incomplete: {report.missing_text() or why}")
    return IncompleteListingError(
        "; ".join(parts),
        hint=None if report.complete else "the server's listing moved or misbehaved",
        complete=report.complete,
        rejected=report.rejected,
    )


def projects(*, client: ApiClient | None = None) -> Iterator[dict[str, Any]]:
    """The approved projects, as the server describes them (``ohpub list projects``)."""
    return _objects("projects", client)


def datatypes(*, client: ApiClient | None = None) -> Iterator[dict[str, Any]]:
    """The datatypes (``ohpub list datatypes``)."""
    return _objects("datatypes", client)


def members(*, client: ApiClient | None = None) -> Iterator[dict[str, Any]]:
    """The public members (``ohpub list members``)."""
    return _objects("members", client)


def _objects(kind: str, client: ApiClient | None) -> Iterator[dict[str, Any]]:
    with _using(client) as c:
        yield from c.iter_objects(kind)


# -- mirror -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MirrorEvent:
    """One thing a running mirror reports to ``progress``.

    ``kind`` is ``listed`` (``count`` files listed so far), ``expected`` (the listing's own
    count), ``listing_done`` (the listing ended with ``count`` files), ``started`` and
    ``finished`` (a transfer of ``file``), ``sized`` (a transfer learned its file's size,
    ``count``), ``bytes`` (``count`` more bytes arrived; negative
    when a transfer restarts), ``result`` (``result`` is one file's record) or ``warning``
    (``message``).
    """

    kind: str
    count: int = 0
    file: DataFile | None = None
    result: FileResult | None = None
    message: str | None = None


@dataclass(frozen=True)
class MirrorResult:
    """How ``ohpub.mirror`` went. ``ok`` is the CLI's exit 0: every file in scope present
    and verified (unavailable ones excepted unless ``strict``), the listing complete."""

    ok: bool
    files: list[FileResult]
    counts: dict[str, int]
    bytes_downloaded: int
    bytes_planned: int
    elapsed: float
    listing_complete: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Files in scope (deleted ones are no longer files of the mirror)."""
        return sum(n for s, n in self.counts.items() if s != FileStatus.DELETED.value)

    @classmethod
    def of(cls, summary: MirrorSummary, results: list[FileResult]) -> MirrorResult:
        return cls(
            ok=summary.ok,
            files=results,
            counts={str(k): v for k, v in summary.counts.items()},
            bytes_downloaded=summary.bytes_downloaded,
            bytes_planned=summary.bytes_planned,
            elapsed=summary.elapsed,
            listing_complete=summary.listing_complete,
            warnings=list(summary.warnings),
        )


class _Events:
    """The engine's watcher for ``ohpub.mirror``: collect results, forward to ``progress``."""

    def __init__(self, progress: Callable[[MirrorEvent], None] | None, keep: bool) -> None:
        self._progress = progress
        self._keep = keep
        self.results: list[FileResult] = []

    def _emit(self, event: MirrorEvent) -> None:
        if self._progress is not None:
            self._progress(event)

    def listed(self, n: int) -> None:
        self._emit(MirrorEvent("listed", count=n))

    def expected(self, n: int) -> None:
        self._emit(MirrorEvent("expected", count=n))

    def listing_done(self, n: int) -> None:
        self._emit(MirrorEvent("listing_done", count=n))

    def started(self, f: DataFile) -> None:
        self._emit(MirrorEvent("started", file=f))

    def sized(self, nbytes: int) -> None:
        self._emit(MirrorEvent("sized", count=nbytes))

    def progress(self, nbytes: int) -> None:
        self._emit(MirrorEvent("bytes", count=nbytes))

    def finished(self, f: DataFile) -> None:
        self._emit(MirrorEvent("finished", file=f))

    def result(self, r: FileResult) -> None:
        if self._keep:
            self.results.append(r)
        self._emit(MirrorEvent("result", result=r))

    def warning(self, message: str) -> None:
        self._emit(MirrorEvent("warning", message=message))


def mirror(
    dest: PathLike,
    *,
    project: IdFilter = None,
    user: TextFilter = None,
    datatype: IdFilter = None,
    tag: TextFilter = None,
    name: TextFilter = None,
    since: DateLike = None,
    until: DateLike = None,
    jobs: int = 8,
    dry_run: bool = False,
    delete: bool = False,
    max_size: int | str | None = None,
    strict: bool = False,
    checksum: bool = False,
    progress: Callable[[MirrorEvent], None] | None = None,
    client: ApiClient | None = None,
    keep_results: bool = True,
) -> MirrorResult:
    """Mirror the matching public files into ``dest/<username>/<project id>/<name>``.

    Resumable and verified like ``ohpub mirror``; a second call on an up-to-date mirror
    reports every file ``unchanged``. ``max_size`` takes bytes or a size like ``"500M"``.
    Raises ``LockedError`` when another run holds ``dest``, ``UsageError`` for a bad
    ``dest``, ``NetworkError``/``ServerError`` when the listing fails; failures of single
    files are in the result (``ok`` is then False). With ``keep_results=False`` the result's
    ``files`` stays empty (``progress`` still sees every ``result``): a nightly mirror of
    100,000 files need not hold them.
    """
    limit = parse_size(max_size) if isinstance(max_size, str) else max_size
    opts = MirrorOptions(
        dest=Path(os.fspath(dest)),
        flt=make_filter(project, user, datatype, tag, name, since, until),
        jobs=jobs,
        dry_run=dry_run,
        delete=delete,
        max_size=limit,
        strict=strict,
        checksum=checksum,
    )
    return run_mirror(opts, progress=progress, client=client, keep_results=keep_results)


def run_mirror(
    opts: MirrorOptions,
    *,
    progress: Callable[[MirrorEvent], None] | None = None,
    client: ApiClient | None = None,
    keep_results: bool = True,
) -> MirrorResult:
    """``mirror`` with options already built (the CLI's way in; it keeps no per-file list)."""
    events = _Events(progress, keep_results)
    with _using(client) as c:
        summary = Mirror(c, opts, events).run()
    return MirrorResult.of(summary, events.results)


# -- single files -----------------------------------------------------------------------------


def fetch(
    file_id: int, dest: PathLike = ".", *, force: bool = False, client: ApiClient | None = None
) -> Path:
    """Download one file, verified, and return its path.

    A directory ``dest`` gets the file under its (sanitized) basename; any other path is
    used as it is. Identical bytes already there count as done; different bytes raise
    ``UsageError`` unless ``force``.
    """
    target = Path(os.fspath(dest))
    with _using(client) as c:
        f = c.get_file(file_id)
        if target.is_dir():
            target = target / fetch_mod._names([f])[f.id]
        elif not target.parent.is_dir():
            raise UsageError(f"directory of {target} does not exist")
        r = fetch_mod._fetch_one(Downloader(c), f, target, force)
    if r.status == "refused":
        raise UsageError(r.error or f"{target} exists", hint="pass force=True to replace it")
    if r.error:
        raise OhpubError(r.error, hint=r.hint)
    return target


def fetch_many(
    ids: Iterable[int],
    directory: PathLike = ".",
    *,
    output: PathLike | None = None,
    force: bool = False,
    on_result: Callable[[FetchResult], None] | None = None,
    client: ApiClient | None = None,
) -> builtins.list[FetchResult]:
    """``ohpub fetch ID...``: each file into ``directory`` under distinct safe names (or
    the one file to ``output``); one ``FetchResult`` per id, failures included (``ok``,
    ``error``, ``usage`` when the id is unknown or a directory is in the way)."""
    with _using(client) as c:
        return fetch_mod.fetch_files(
            c,
            builtins.list(ids),
            directory=Path(os.fspath(directory)),
            output=None if output is None else os.fspath(output),
            force=force,
            on_message=lambda _m: None,
            on_result=on_result or (lambda _r: None),
        )


def stream(file_id: int, out: BinaryIO, *, client: ApiClient | None = None) -> int:
    """Write the stored bytes of one file to the binary stream ``out`` (say stdout), with
    retries (a restart skips what was already written); verified at the end, when
    ``IntegrityError`` means the bytes already written are wrong. Returns the size."""
    with _using(client) as c:
        return Downloader(c).to_stream(c.get_file(file_id), out).size


def read_bytes(file_id: int, *, client: ApiClient | None = None) -> bytes:
    """The stored bytes of one file (verified), in memory."""
    buf = io.BytesIO()
    with _using(client) as c:
        Downloader(c).to_stream(c.get_file(file_id), buf)
    return buf.getvalue()


@contextlib.contextmanager
def open(file_id: int, *, client: ApiClient | None = None) -> Iterator[BinaryIO]:  # noqa: A001
    """A readable binary stream of one file's stored bytes (not decompressed).

    The length and (for single-part uploads) the MD5 are checked as the stream ends:
    reading to the end raises ``IntegrityError`` when they do not match. There is no
    resume inside one stream; ``fetch`` resumes.
    """
    with _using(client) as c:
        f = c.get_file(file_id)
        url = c.resolve_download(f)
        try:
            resp = c.open_storage(url, {"Accept-Encoding": "identity"})
        except (requests.exceptions.RequestException, OSError) as exc:
            raise NetworkError(f"file {file_id}: {describe_exception(exc)}") from exc
        with resp:
            if resp.status_code != 200:
                raise UnavailableError(f"file {file_id}: storage answered {resp.status_code}")
            raw = _VerifiedStream(resp, file_id)
            with io.BufferedReader(raw, 1024 * 1024) as stream:
                yield stream


class _VerifiedStream(io.RawIOBase):
    """The body of a storage response, checked for length and MD5 at its end."""

    def __init__(self, resp: requests.Response, file_id: int) -> None:
        self._resp = resp
        self._id = file_id
        self._md5 = hashlib.md5()
        self._n = 0
        length = resp.headers.get("Content-Length", "")
        self._total = int(length) if length.isdigit() else None
        etag = resp.headers.get("ETag", "").strip().removeprefix("W/").strip('"')
        self._etag = etag if re.fullmatch(r"[0-9a-f]{32}", etag) else None
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            data = self._resp.raw.read(len(b), decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise NetworkError(f"file {self._id}: {describe_exception(exc)}") from exc
        if not data:
            self._check()
            return 0
        n = len(data)
        b[:n] = data
        self._md5.update(data)
        self._n += n
        return n

    def _check(self) -> None:
        if self._checked:
            return
        self._checked = True
        if self._total is not None and self._n != self._total:
            raise IntegrityError(
                f"file {self._id}: got {self._n} bytes, storage announced {self._total}"
            )
        if self._etag is not None and self._md5.hexdigest() != self._etag:
            raise IntegrityError(
                f"file {self._id}: checksum mismatch (md5 {self._md5.hexdigest()}, "
                f"storage ETag {self._etag})"
            )


# -- existing mirrors -------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """``ohpub verify``: ``ok`` when every tracked file is present with its bytes;
    ``files`` holds the records of ``verify --format jsonl``."""

    ok: bool
    files: list[dict[str, Any]]
    counts: dict[str, int]

    def summary(self) -> str:
        """``verified 31 files: 31 ok, 0 modified, 0 missing, 1 untracked``."""
        c = {k: self.counts.get(k, 0) for k in ("ok", "modified", "missing", "untracked")}
        return (
            f"verified {c['ok'] + c['modified'] + c['missing']} files: {c['ok']} ok, "
            f"{c['modified']} modified, {c['missing']} missing, {c['untracked']} untracked"
        )


def verify(
    dest: PathLike,
    *,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    keep_records: bool = True,
) -> VerifyResult:
    """Re-hash every tracked file of the mirror at ``dest`` against its state (and list
    untracked files). ``on_record`` sees each record as it is made; with
    ``keep_records=False`` the result's ``files`` stays empty."""
    records: builtins.list[dict[str, Any]] = []

    def emit(rec: dict[str, Any]) -> None:
        if keep_records:
            records.append(rec)
        if on_record is not None:
            on_record(rec)

    report = verify_mod.verify_mirror(Path(os.fspath(dest)), on_record=emit)
    return VerifyResult(ok=report.ok, files=records, counts=dict(report.counts))


@dataclass(frozen=True)
class MirrorStatus:
    """``ohpub status``: the fields of ``status --format json``."""

    files: int
    bytes: int
    by_status: dict[str, int]
    by_project: dict[str, dict[str, int]]
    by_member: dict[str, dict[str, int]]
    running: dict[str, Any] | None
    """The run holding DEST's lock now (``command``, ``pid``), if any."""
    last_run: dict[str, Any] | None
    last_complete_run: dict[str, Any] | None
    stale: bool
    """With ``max_age``: the mirror is not fresh (the README says exactly what fresh is)."""
    stale_reason: str | None
    fields: dict[str, Any] = field(default_factory=dict, repr=False)
    """Every field of the JSON record (including any not named above)."""
    text: str = field(default="", repr=False)
    """The text ``ohpub status`` prints."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.fields)


def status(dest: PathLike, *, max_age: float | str | None = None) -> MirrorStatus:
    """What the mirror at ``dest`` holds and how its runs went (reads only; works on a
    mirror you cannot write). ``max_age`` (seconds, or a duration such as ``"26h"``)
    also judges whether it is fresh (``stale``)."""
    age = parse_duration(max_age) if isinstance(max_age, str) else max_age
    st = status_mod.mirror_status(Path(os.fspath(dest)), max_age=age)
    d = st.as_dict()
    return MirrorStatus(
        files=d["files"],
        bytes=d["bytes"],
        by_status=d["by_status"],
        by_project=d["by_project"],
        by_member=d["by_member"],
        running=d.get("running"),
        last_run=d["last_run"],
        last_complete_run=d["last_complete_run"],
        stale=bool(d.get("stale")),
        stale_reason=d.get("stale_reason"),
        fields=d,
        text=st.render("text"),
    )


def index(dest: PathLike) -> builtins.list[dict[str, Any]]:
    """The records of ``dest/index.jsonl``: one per tracked file (API fields, path, sha256)."""
    try:
        return builtins.list(read_index(Path(os.fspath(dest))))
    except FileNotFoundError:
        raise UsageError(f"{dest} has no index.jsonl", hint="is it an ohpub mirror?") from None


__all__ = [
    "Client",
    "files",
    "projects",
    "datatypes",
    "members",
    "mirror",
    "run_mirror",
    "make_filter",
    "to_datetime",
    "MirrorEvent",
    "MirrorResult",
    "fetch",
    "fetch_many",
    "stream",
    "read_bytes",
    "open",
    "verify",
    "VerifyResult",
    "status",
    "MirrorStatus",
    "index",
    "FileStatus",
]
