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
import dataclasses
import inspect
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from ohpub.bucket.objects import bucket_url, default_work_dir
from ohpub.local.index import read_index
from ohpub.mirror.types import FileResult, MirrorOptions, MirrorSummary
from ohpub.model.config import Config
from ohpub.model.errors import (
    IncompleteListingError,
    OhpubError,
    UsageError,
)
from ohpub.model.filters import FileFilter, Filters, IdLike, parse_id
from ohpub.model.records import DataFile, FileStatus
from ohpub.model.units import parse_duration, parse_size
from ohpub.ops import bucketops
from ohpub.ops import fetch as fetch_mod
from ohpub.ops import status as status_mod
from ohpub.ops import verify as verify_mod
from ohpub.ops.fetch import FetchResult
from ohpub.ops.status import MirrorStatus
from ohpub.ops.verify import VerifyRecord, VerifyResult
from ohpub.remote.client import ApiClient
from ohpub.remote.listing import ListingReport
from ohpub.transfer.downloader import Downloader
from ohpub.transfer.reader import StreamReader

PathLike = str | os.PathLike[str]
F = TypeVar("F", bound=Callable[..., Any])


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


# -- the filter keywords ---------------------------------------------------------------------


def _filter_keywords(func: F) -> F:
    """Show the seven filters of ``Filters`` as keyword parameters of ``func`` (which takes
    them as ``**where``) to ``inspect.signature``, ``help()`` and Jupyter: they are
    declared once, in ``Filters``, and checked there (an unknown one is a ``UsageError``)."""
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    first_kw = next(i for i, p in enumerate(params) if p.kind is p.KEYWORD_ONLY)
    hints = {f.name: f.type for f in dataclasses.fields(Filters)}
    params[first_kw:first_kw] = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=hints[n])
        for n in Filters.names()
    ]
    func.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return func


# -- listings -------------------------------------------------------------------------------


@_filter_keywords
def files(
    filters: Filters | None = None,
    *,
    limit: int | None = None,
    client: ApiClient | None = None,
    **where: object,
) -> Iterator[DataFile]:
    """Every matching public data file, once, streamed as the listing arrives.

    Filters are those of ``ohpub list``, as a ``Filters`` or as keywords (``project``,
    ``user``, ``datatype``, ``tag``, ``name``, ``since``, ``until``): values of one
    filter OR together, filters AND together; ids as ints or strings; ``since``/``until``
    a datetime, a date or ``YYYY-MM-DD`` (``until`` a date includes that day). Bad
    filters raise ``UsageError`` at once. When the listing could not be completed, the
    files that did arrive are yielded and ``IncompleteListingError`` is raised at the end.
    """
    flt = Filters.of(filters, **where).to_filter()
    return _stream_files(flt, limit, client)


def _stream_files(
    flt: FileFilter, limit: int | None, client: ApiClient | None
) -> Iterator[DataFile]:
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


def projects(*, client: ApiClient | None = None) -> builtins.list[dict[str, Any]]:
    """The approved projects, as the server describes them (``ohpub list projects``)."""
    return _objects("projects", client)


def datatypes(*, client: ApiClient | None = None) -> builtins.list[dict[str, Any]]:
    """The datatypes (``ohpub list datatypes``)."""
    return _objects("datatypes", client)


def members(*, client: ApiClient | None = None) -> builtins.list[dict[str, Any]]:
    """The public members (``ohpub list members``)."""
    return _objects("members", client)


def _objects(kind: str, client: ApiClient | None) -> builtins.list[dict[str, Any]]:
    with _using(client) as c:
        return builtins.list(c.iter_objects(kind))


# -- mirror -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MirrorEvent:
    """One thing a running mirror (or ``fetch_many``) reports to ``progress``.

    ``kind`` is ``listed`` (``count`` files listed so far), ``expected`` (the listing's own
    count), ``listing_done`` (the listing ended with ``count`` files), ``kept`` (``count``
    more listed files need no download), ``started`` and ``finished`` (a transfer of
    ``file``), ``sized`` (a transfer learned its file's size, ``count``), ``bytes``
    (``count`` more bytes arrived; negative when a transfer restarts), ``reused``
    (``count`` bytes of a file were already on disk from an earlier run: kept, not
    downloaded again; negative when a restart drops them), ``result`` (``result`` is one
    file's record) or ``warning`` (``message``).
    """

    kind: str
    count: int = 0
    file: DataFile | None = None
    result: FileResult | None = None
    message: str | None = None


@dataclass(frozen=True)
class MirrorResult:
    """How ``ohpub.mirror`` went. ``ok`` is the CLI's exit 0: every file in scope present
    and verified (unavailable ones excepted unless ``strict``), the listing complete.
    ``counts`` has every status of ``FileStatus``; ``bytes_downloaded`` is what this run
    fetched, ``bytes_reused`` what resumed files already had from an earlier run."""

    ok: bool
    files: list[FileResult]
    counts: dict[str, int]
    bytes_downloaded: int
    bytes_planned: int
    elapsed: float
    listing_complete: bool
    warnings: list[str] = field(default_factory=list)
    bytes_reused: int = 0

    @property
    def total(self) -> int:
        """Files in scope (deleted ones are no longer files of the mirror)."""
        return sum(n for s, n in self.counts.items() if s != FileStatus.DELETED.value)

    @classmethod
    def of(cls, summary: MirrorSummary, results: builtins.list[FileResult]) -> MirrorResult:
        return cls(
            ok=summary.ok,
            files=results,
            counts={str(k): v for k, v in summary.counts.items()},
            bytes_downloaded=summary.bytes_transferred,
            bytes_planned=summary.bytes_planned,
            elapsed=summary.elapsed,
            listing_complete=summary.listing_complete,
            warnings=builtins.list(summary.warnings),
            bytes_reused=summary.bytes_reused,
        )

    def __repr__(self) -> str:
        counts = {k: v for k, v in self.counts.items() if v}
        return (
            f"MirrorResult(ok={self.ok}, files=<{len(self.files)} results>, counts={counts}, "
            f"bytes_downloaded={self.bytes_downloaded}, elapsed={self.elapsed:.1f}, "
            f"listing_complete={self.listing_complete})"
        )


class _Events:
    """The mirror run's watcher for ``ohpub.mirror``: collect results, forward to
    ``progress``."""

    def __init__(self, progress: Callable[[MirrorEvent], None] | None, keep: bool) -> None:
        self._progress = progress
        self._keep = keep
        self.results: builtins.list[FileResult] = []

    def close(self) -> None:
        """The run is over: a worker still letting go of a cancelled transfer reports
        nothing more."""
        self._progress = None

    def _emit(self, event: MirrorEvent) -> None:
        progress = self._progress
        if progress is not None:
            progress(event)

    def listed(self, n: int) -> None:
        self._emit(MirrorEvent("listed", count=n))

    def expected(self, n: int) -> None:
        self._emit(MirrorEvent("expected", count=n))

    def listing_done(self, n: int) -> None:
        self._emit(MirrorEvent("listing_done", count=n))

    def kept(self, n: int) -> None:
        if n:
            self._emit(MirrorEvent("kept", count=n))

    def started(self, f: DataFile) -> None:
        self._emit(MirrorEvent("started", file=f))

    def sized(self, nbytes: int) -> None:
        self._emit(MirrorEvent("sized", count=nbytes))

    def progress(self, nbytes: int) -> None:
        self._emit(MirrorEvent("bytes", count=nbytes))

    def reused(self, nbytes: int) -> None:
        self._emit(MirrorEvent("reused", count=nbytes))

    def finished(self, f: DataFile) -> None:
        self._emit(MirrorEvent("finished", file=f))

    def result(self, r: FileResult) -> None:
        if self._keep:
            self.results.append(r)
        self._emit(MirrorEvent("result", result=r))

    def warning(self, message: str) -> None:
        self._emit(MirrorEvent("warning", message=message))


@_filter_keywords
def mirror(
    dest: PathLike,
    filters: Filters | None = None,
    *,
    jobs: int = 8,
    dry_run: bool = False,
    delete: bool = False,
    max_size: int | str | None = None,
    strict: bool = False,
    checksum: bool = False,
    progress: Callable[[MirrorEvent], None] | None = None,
    client: ApiClient | None = None,
    keep_results: bool = True,
    work_dir: PathLike | None = None,
    **where: object,
) -> MirrorResult:
    """Mirror the matching public files into ``dest/<username>/<project id>/<name>``.

    Filters as for ``files`` (a ``Filters``, or ``project=176`` and the other keywords).
    ``dest`` may be ``s3://bucket/prefix`` (``pip install 'ohpub[s3]'``); partials and a
    working copy of the state then live in ``work_dir`` (default: under
    ``$XDG_CACHE_HOME/ohpub``).

    Resumable and verified like ``ohpub mirror``; a second call on an up-to-date mirror
    reports every file ``unchanged``. ``max_size`` takes bytes or a size like ``"500M"``.
    Raises ``LockedError`` when another run holds ``dest``, ``UsageError`` for a bad
    ``dest`` or filter, ``NetworkError``/``ServerError`` when the listing fails; failures
    of single files are in the result (``ok`` is then False). With ``keep_results=False``
    the result's ``files`` stays empty (``progress`` still sees every ``result``): a
    nightly mirror of 100,000 files need not hold them.
    """
    limit = parse_size(max_size) if isinstance(max_size, str) else max_size
    url, local = _dest_of(dest, work_dir)
    opts = MirrorOptions(
        dest=local,
        url=url,
        flt=Filters.of(filters, **where).to_filter(),
        jobs=jobs,
        dry_run=dry_run,
        delete=delete,
        max_size=limit,
        strict=strict,
        checksum=checksum,
    )
    return run_mirror(opts, progress=progress, client=client, keep_results=keep_results)


def _dest_of(dest: PathLike, work_dir: PathLike | None) -> tuple[str | None, Path]:
    """(the bucket URL or None, the local directory: DEST itself or the work dir)."""
    url = bucket_url(dest)
    if url is None:
        return None, Path(os.fspath(dest))
    return url, Path(os.fspath(work_dir)) if work_dir is not None else default_work_dir(url)


def run_mirror(
    opts: MirrorOptions,
    *,
    progress: Callable[[MirrorEvent], None] | None = None,
    client: ApiClient | None = None,
    keep_results: bool = True,
) -> MirrorResult:
    """``mirror`` with options already built."""
    events = _Events(progress, keep_results)
    with _using(client) as c:
        from ohpub.mirror.run import Mirror  # the run's machinery: imported for a run only

        try:
            summary = Mirror(c, opts, events).run()
        finally:
            events.close()
    return MirrorResult.of(summary, events.results)


# -- single files -----------------------------------------------------------------------------


def fetch(
    file_id: IdLike, dest: PathLike = ".", *, force: bool = False, client: ApiClient | None = None
) -> Path:
    """Download one file, verified, and return its path.

    A directory ``dest`` gets the file under its (sanitized) basename; any other path is
    used as it is. Identical bytes already there count as done; different bytes raise
    ``UsageError`` unless ``force``.
    """
    fid = parse_id(file_id)
    target = Path(os.fspath(dest))
    with _using(client) as c:
        f = c.get_file(fid)
        if target.is_dir():
            target = target / fetch_mod._names([f])[f.id]
        elif not target.parent.is_dir():
            raise UsageError(f"directory of {target} does not exist")
        fetch_mod.writable_dir(target.parent)
        r = fetch_mod._fetch_one(Downloader(c), f, target, force)
    if r.status == "refused":
        raise UsageError(r.error or f"{target} exists", hint="pass force=True to replace it")
    if r.error:
        raise OhpubError(r.error, hint=r.hint)
    return target


def fetch_many(
    ids: Iterable[IdLike],
    directory: PathLike = ".",
    *,
    output: PathLike | None = None,
    force: bool = False,
    on_result: Callable[[FetchResult], None] | None = None,
    progress: Callable[[MirrorEvent], None] | None = None,
    client: ApiClient | None = None,
) -> builtins.list[FetchResult]:
    """``ohpub fetch ID...``: each file into ``directory`` under distinct safe names (or
    the one file to ``output``); one ``FetchResult`` per id, failures included (``ok``,
    ``error``, ``usage`` when the id is unknown or a directory is in the way).
    ``progress`` sees ``started``, ``sized`` and ``bytes`` events, as for ``mirror``."""
    events = _Events(progress, keep=False)
    watch = fetch_mod.FetchWatch(events.started, events.sized, events.progress, events.reused)
    with _using(client) as c:
        return fetch_mod.fetch_files(
            c,
            [parse_id(i) for i in ids],
            directory=Path(os.fspath(directory)),
            output=None if output is None else os.fspath(output),
            force=force,
            on_message=lambda _m: None,
            on_result=on_result or (lambda _r: None),
            watch=watch,
        )


def stream(
    file_id: IdLike,
    out: BinaryIO,
    *,
    progress: Callable[[MirrorEvent], None] | None = None,
    client: ApiClient | None = None,
) -> int:
    """Write the stored bytes of one file to the binary stream ``out`` (say stdout), with
    retries (a restart skips what was already written); verified at the end, when
    ``IntegrityError`` means the bytes already written are wrong. Returns the size.
    ``progress`` sees ``started`` and ``bytes`` events."""
    events = _Events(progress, keep=False)
    with _using(client) as c:
        f = c.get_file(parse_id(file_id))
        events.started(f)
        return Downloader(c).to_stream(f, out, events.progress).size


def read_bytes(file_id: IdLike, *, client: ApiClient | None = None) -> bytes:
    """The stored bytes of one file (verified), in memory."""
    buf = io.BytesIO()
    with _using(client) as c:
        Downloader(c).to_stream(c.get_file(parse_id(file_id)), buf)
    return buf.getvalue()


@contextlib.contextmanager
def open(file_id: IdLike, *, client: ApiClient | None = None) -> Iterator[BinaryIO]:  # noqa: A001
    """A readable binary stream of one file's stored bytes (not decompressed).

    The bytes come through the same downloader as ``fetch`` and ``read_bytes``: a failed
    request is retried, a broken connection resumes where it stopped, and the length and
    (for single-part uploads) the MD5 are checked: reading to the end raises
    ``IntegrityError`` when they do not match. Memory stays bounded (a few MiB ahead of
    the reader); leaving the ``with`` block early stops the transfer.
    """
    file_id = parse_id(file_id)
    with _using(client) as c:
        f = c.get_file(file_id)
        own = c.scoped()  # closing the stream cancels this transfer only
        raw = StreamReader(Downloader(own), f)
        try:
            raw.wait_ready()
            with io.BufferedReader(raw, 1024 * 1024) as stream:
                yield stream
        finally:
            raw.close()


# -- existing mirrors -------------------------------------------------------------------------


def verify(
    dest: PathLike,
    *,
    on_record: Callable[[VerifyRecord], None] | None = None,
    keep_records: bool = True,
    work_dir: PathLike | None = None,
) -> VerifyResult:
    """Re-hash every tracked file of the mirror at ``dest`` against its state (and list
    untracked files). ``on_record`` sees each ``VerifyRecord`` as it is made; with
    ``keep_records=False`` the result's ``files`` stays empty."""
    url, local = _dest_of(dest, work_dir)
    if url is not None:
        return bucketops.verify_bucket(
            url, local, on_record or (lambda _r: None), keep=keep_records
        )
    return verify_mod.verify_mirror(local, on_record or (lambda _r: None), keep=keep_records)


def status(
    dest: PathLike, *, max_age: float | str | None = None, work_dir: PathLike | None = None
) -> MirrorStatus:
    """What the mirror at ``dest`` holds and how its runs went (reads only; works on a
    mirror you cannot write). ``max_age`` (seconds, or a duration such as ``"26h"``)
    also judges whether it is fresh (``stale``, ``stale_reason``)."""
    age = parse_duration(max_age) if isinstance(max_age, str) else max_age
    url, local = _dest_of(dest, work_dir)
    if url is not None:
        return bucketops.bucket_status(url, local, max_age=age)
    return status_mod.mirror_status(local, max_age=age)


def index(dest: PathLike) -> builtins.list[dict[str, Any]]:
    """The records of ``dest/index.jsonl``: one per tracked file (API fields, path, sha256)."""
    url = bucket_url(dest)
    if url is not None:
        return bucketops.bucket_index(url)
    try:
        return builtins.list(read_index(Path(os.fspath(dest))))
    except FileNotFoundError:
        raise UsageError(f"{dest} has no index.jsonl", hint="is it an ohpub mirror?") from None


__all__ = [
    "Client",
    "Filters",
    "files",
    "projects",
    "datatypes",
    "members",
    "mirror",
    "run_mirror",
    "MirrorEvent",
    "MirrorResult",
    "fetch",
    "fetch_many",
    "stream",
    "read_bytes",
    "open",
    "verify",
    "VerifyRecord",
    "VerifyResult",
    "status",
    "MirrorStatus",
    "index",
    "FileStatus",
]
