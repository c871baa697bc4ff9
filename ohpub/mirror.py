"""The mirror engine: list, decide, download, place, record, report.

A run goes like this:

1. The listing streams in. Each file whose id the state knows, and whose stat
   fingerprint (size, mtime_ns) is unchanged, needs nothing. Every other file is
   handed to a worker at once, which downloads it into ``.ohpub/partial/<id>``
   (verified, not yet placed), so transfers overlap the rest of the listing.
2. When the listing is complete, the tree is computed from it (``layout``, a pure
   function of the listing), files already on disk are renamed where their path
   changed (a newer file took over a plain name), and files in the way that are no
   longer listed are moved aside.
3. Finished downloads are then moved into place one by one and recorded in the
   state as each completes; a crash loses at most the files in flight.
4. Files a complete listing no longer contains are marked removed-upstream (and
   deleted with ``--delete``), and ``index.jsonl`` is rewritten atomically.

Only the main thread writes to the state or the tree; workers only fill partial files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ohpub import layout
from ohpub.api import Client, FileFilter, ListingReport
from ohpub.download import Downloaded, Downloader, TooLargeError
from ohpub.errors import (
    NetworkError,
    OhpubError,
    ServerError,
    StateError,
    UnavailableError,
    UsageError,
)
from ohpub.records import DataFile, RecordError, parse_datafile
from ohpub.state import (
    OHPUB_DIR,
    DestLock,
    FileState,
    StateDB,
    ensure_dirs,
    partial_dir,
    stat_fingerprint,
    state_db_path,
)
from ohpub.tree import (
    DiskError,
    forget_partial,
    move_within,
    place,
    remove_within,
    sync_dirs,
    write_atomic,
)

log = logging.getLogger("ohpub")

INDEX_NAME = "index.jsonl"
MOVING_DIR = ".ohpub/moving"
DEAD_AFTER = 5
"""Transfers in a row that end in network or server errors (each after its own retries)
before a run stops trying the rest: a dead server then ends a run of any size in bounded
time, instead of spending the retry budget once per file."""
SHRINK_MIN = 10
"""--delete refuses when it would remove more than this many files AND more than half of
the files in scope: a listing that shrank that much is more likely an upstream hiccup."""
STATUSES = (
    "downloaded",
    "resumed",
    "unchanged",
    "renamed",
    "unavailable",
    "skipped",
    "failed",
    "removed-upstream",
    "deleted",
    "planned",
)


@dataclass
class MirrorOptions:
    dest: Path
    flt: FileFilter = field(default_factory=FileFilter)
    jobs: int = 8
    dry_run: bool = False
    delete: bool = False
    max_size: int | None = None
    strict: bool = False


@dataclass
class FileResult:
    """One line of the mirror's report (the jsonl record)."""

    id: int
    path: str | None
    status: str
    bytes: int | None = None
    sha256: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "status": self.status,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "error": self.error,
        }


@dataclass
class MirrorSummary:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    bytes_downloaded: int = 0
    bytes_transferred: int = 0
    bytes_planned: int = 0
    elapsed: float = 0.0
    listing_complete: bool = False
    warnings: list[str] = field(default_factory=list)
    exit_code: int = 0

    @property
    def files(self) -> int:
        return sum(self.counts[s] for s in STATUSES if s not in ("deleted",))


class Events(Protocol):
    """What the mirror tells its watcher (progress bars, jsonl writer); all optional."""

    def listed(self, n: int) -> None: ...
    def expected(self, n: int) -> None: ...
    def queued(self, n: int) -> None: ...
    def started(self, f: DataFile) -> None: ...
    def progress(self, nbytes: int) -> None: ...
    def finished(self, f: DataFile) -> None: ...
    def result(self, r: FileResult) -> None: ...
    def warning(self, message: str) -> None: ...


class NullEvents:
    def listed(self, n: int) -> None:
        pass

    def expected(self, n: int) -> None:
        """The listing's own count of files in scope, once known (before all are listed)."""

    def queued(self, n: int) -> None:
        pass

    def started(self, f: DataFile) -> None:
        pass

    def progress(self, nbytes: int) -> None:
        pass

    def finished(self, f: DataFile) -> None:
        pass

    def result(self, r: FileResult) -> None:
        pass

    def warning(self, message: str) -> None:
        log.warning(message)


class Cancelled(Exception):
    """Raised inside workers when the run is interrupted."""


@dataclass
class _Outcome:
    kind: str  # "kept" | "downloaded" | "error" | "unavailable" | "skipped" | "probed"
    fp: tuple[int, int] | None = None
    download: Downloaded | None = None
    error: str | None = None
    size: int | None = None


def prepare_dest(dest: Path, *, create: bool) -> None:
    """Check DEST before anything is written; problems here are the user's to fix (exit 2)."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a directory")
    if not dest.exists():
        if not dest.parent.is_dir():
            raise UsageError(
                f"cannot create {dest}: parent directory {dest.parent} does not exist",
                hint="create the parent first, or pick another DEST",
            )
        if not create:
            return
        try:
            dest.mkdir()
        except OSError as exc:
            raise UsageError(f"cannot create {dest}: {exc.strerror or exc}") from exc
    if create and not os.access(dest, os.W_OK | os.X_OK):
        raise UsageError(f"{dest} is not writable", hint="check its permissions")


def refuse_lost_state(dest: Path) -> None:
    """A DEST with an index.jsonl held a mirror; if its state database is now missing or
    empty, the record of which files ohpub placed is lost: refuse instead of starting over."""
    db = state_db_path(dest)
    if not (dest / INDEX_NAME).is_file():
        return
    if db.exists() and db.stat().st_size > 0:
        return
    raise StateError(
        f"{dest} holds a mirror ({INDEX_NAME}) but its state database {db} is "
        + ("empty" if db.exists() else "missing")
        + "; refusing to start over",
        hint=f"restore {db} from a backup, or move {dest / INDEX_NAME} away to rebuild",
    )


def hash_file(path: Path) -> tuple[str, str, int]:
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), md5.hexdigest(), size


def record_of(fs: FileState) -> DataFile | None:
    """Rebuild a DataFile from the state, for scope checks of files no longer listed."""
    try:
        return parse_datafile({**fs.raw, "download_url": "-"})
    except RecordError:
        return None


class Mirror:
    """One mirror run over DEST. Create, then call ``run()`` once."""

    def __init__(self, client: Client, opts: MirrorOptions, events: Events | None = None) -> None:
        self.client = client
        self.opts = opts
        self.dest = opts.dest
        self.events: Events = events or NullEvents()
        self.downloader = Downloader(client, storage_slots=max(1, opts.jobs))
        self.cancel = threading.Event()
        self.summary = MirrorSummary()
        self._started = time.monotonic()
        self._renamed: set[int] = set()
        self._index_stale = False
        self._done: queue.SimpleQueue[Future[_Outcome]] = queue.SimpleQueue()
        self._trouble = 0
        self._dead: str | None = None
        self._trouble_lock = threading.Lock()
        self._wanted: dict[str, int] = {}
        """fold(path) -> the listed file id that path belongs to in this run's layout."""

    # -- entry point ---------------------------------------------------------------------------

    def run(self) -> MirrorSummary:
        opts = self.opts
        if opts.dry_run:
            return self._dry_run()
        prepare_dest(self.dest, create=True)
        refuse_lost_state(self.dest)
        ensure_dirs(self.dest)
        with DestLock(self.dest), StateDB.open(self.dest) as state:
            prev = state.last_run()
            self._index_stale = prev is not None and prev.ended is None  # killed last time
            run_id = state.begin_run("mirror", {"scope": opts.flt.scope_key()})
            outcome = "failed"
            try:
                self._run(state)
                outcome = "ok" if self.summary.exit_code == 0 else "failed"
            except KeyboardInterrupt:
                outcome = "interrupted"
                raise
            finally:
                self.summary.elapsed = time.monotonic() - self._started
                with contextlib.suppress(OhpubError, OSError):
                    self._write_index(state)
                state.end_run(
                    run_id,
                    outcome,
                    {k: v for k, v in self.summary.counts.items() if v},
                    complete=self.summary.listing_complete and outcome != "interrupted",
                    scope_counts=(
                        {opts.flt.scope_key(): self._listed_count}
                        if self.summary.listing_complete
                        else None
                    ),
                )
        return self.summary

    # -- the real run ----------------------------------------------------------------------

    def _run(self, state: StateDB) -> None:
        tracked = {fs.id: fs for fs in state.all()}
        listed: dict[int, layout.Entry] = {}
        changed: list[FileState] = []
        unchanged: list[int] = []
        report = ListingReport()
        pending: dict[Future[_Outcome], DataFile] = {}
        # Workers = storage slots + Open Humans slots: a worker waiting for the download view
        # never idles a storage slot, and the other way round (the Downloader bounds each).
        workers = max(1, self.opts.jobs) + self.client.api_concurrency
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ohpub")
        now = time.time()
        try:
            try:
                for f in self.client.iter_files(self.opts.flt, report):
                    listed[f.id] = layout.Entry.of(f)
                    self._see(f, tracked, now, changed, unchanged)
                    self.events.listed(len(listed))
                    fut = self._schedule(pool, f, tracked.get(f.id))
                    if fut is not None:
                        pending[fut] = f
                        self.events.queued(len(pending))
            except OhpubError:
                # The listing failed: nothing may be deleted or marked removed, and what
                # was already downloaded is still worth keeping (after the listing error).
                self._cancel_all(pool, pending)
                raise
            self._listed_count = len(listed)
            self.summary.listing_complete = report.complete
            for w in report.warnings:
                self.summary.warnings.append(w)
            # Record every listed file (new ones as pending) before anything moves.
            state.put_many(changed)
            state.mark_seen(unchanged, now)
            del changed, unchanged
            targets = layout.plan_paths(listed.values())
            self._reconcile_paths(state, tracked, targets, listed)
            self._collect(state, pending, targets, tracked)
            if self._dead is not None:
                raise NetworkError(
                    self._dead, hint="finished files are kept; a rerun resumes the rest"
                )
            self._upstream_removals(state, listed, report, tracked)
        except KeyboardInterrupt:
            self._cancel_all(pool, pending)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        self._finish()

    def _cancel_all(self, pool: ThreadPoolExecutor, pending: dict[Future[_Outcome], Any]) -> None:
        self.cancel.set()
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)

    _listed_count = 0

    def _schedule(
        self, pool: ThreadPoolExecutor, f: DataFile, ts: FileState | None
    ) -> Future[_Outcome] | None:
        """Decide on one listed file: nothing to do, re-hash, or download.

        Finished work lands in a completion queue, so collecting N results costs O(N), not
        the O(N^2) of waiting on the whole pending set once per result.
        """
        rehash = False
        if ts is not None and ts.status in ("present", "removed-upstream") and ts.path:
            fp = stat_fingerprint(self.dest / ts.path)
            if fp is not None and fp == (ts.size, ts.mtime_ns):
                return None
            rehash = fp is not None
        fut = pool.submit(self._work, f, ts, rehash)
        fut.add_done_callback(self._done.put)
        return fut

    def _work(self, f: DataFile, ts: FileState | None, rehash: bool) -> _Outcome:
        """Runs in a worker: re-hash a changed file, or download into the partial dir."""
        if self.cancel.is_set():
            raise Cancelled()
        try:
            if rehash and ts is not None and ts.path:
                path = self.dest / ts.path
                sha, _md5, size = hash_file(path)
                if sha == ts.sha256 and size == ts.size:
                    return _Outcome("kept", fp=stat_fingerprint(path))
                log.info("file %s at %s changed on disk; downloading again", f.id, ts.path)
            self.events.started(f)
            part = partial_dir(self.dest) / str(f.id)

            def progress(n: int) -> None:
                if self.cancel.is_set():
                    raise Cancelled()
                self.events.progress(n)

            try:
                d = self.downloader.to_part(
                    f,
                    part,
                    progress,
                    max_size=self.opts.max_size,
                    root=self.dest,  # h4: no-follow
                )
            finally:
                self.events.finished(f)
            with contextlib.suppress(OSError):
                ts_created = f.created.timestamp()
                os.utime(part, (ts_created, ts_created))
            self._trouble = 0
            return _Outcome("downloaded", download=d)
        except UnavailableError as exc:
            return _Outcome("unavailable", error=exc.message)
        except TooLargeError as exc:
            return _Outcome("skipped", error=exc.message, size=exc.size)
        except OhpubError as exc:
            if isinstance(exc, (NetworkError, ServerError)):
                self._server_trouble(exc)
            return _Outcome("error", error=exc.message)
        except OSError as exc:
            return _Outcome("error", error=f"file {f.id}: {exc.strerror or exc}")

    def _server_trouble(self, exc: OhpubError) -> None:
        """Count a transfer lost to the network or the server; stop the run after a streak."""
        with self._trouble_lock:
            self._trouble += 1
            if self._trouble >= DEAD_AFTER and self._dead is None:
                self._dead = (
                    f"stopping: {self._trouble} downloads in a row failed; last: {exc.message}"
                )
                self.cancel.set()

    @staticmethod
    def _see(
        f: DataFile,
        tracked: dict[int, FileState],
        now: float,
        changed: list[FileState],
        unchanged: list[int],
    ) -> None:
        """Classify one listed file against the state as it streams in: only new and changed
        records are written; unchanged ones just get ``last_seen`` (one batch at the end)."""
        fresh = FileState.from_datafile(f, now)
        ts = tracked.get(f.id)
        if ts is None:
            tracked[f.id] = fresh
            changed.append(fresh)
            return
        ts.last_seen = now
        status = ts.status
        if status == "removed-upstream":
            status = "present" if ts.path else "pending"
        if (
            _stable(ts.raw) == _stable(fresh.raw)
            and ts.username == fresh.username
            and ts.user_id == fresh.user_id
            and ts.datatype_ids == fresh.datatype_ids
            and status == ts.status
        ):
            unchanged.append(f.id)
            return
        ts.raw, ts.metadata = fresh.raw, fresh.metadata
        ts.username, ts.user_id = fresh.username, fresh.user_id
        ts.datatype_ids, ts.status = fresh.datatype_ids, status
        changed.append(ts)

    # -- paths -----------------------------------------------------------------------------

    def _reconcile_paths(
        self,
        state: StateDB,
        tracked: dict[int, FileState],
        targets: dict[int, str],
        listed: dict[int, layout.Entry],
    ) -> None:
        """Rename files whose path changed and move aside unlisted files in the way.

        Every move goes through ``.ohpub/moving/<id>`` first, so chains and swaps of names
        cannot overwrite each other, and a crash between the two steps leaves each file
        at a path the state knows.
        """
        wanted = {layout.fold(p): fid for fid, p in targets.items()}
        self._wanted = wanted
        moves: list[tuple[int, str, str]] = []
        for fid, fs in tracked.items():
            if not fs.path or fs.status not in ("present", "removed-upstream"):
                continue
            if fid in targets:
                if fs.path != targets[fid]:
                    moves.append((fid, fs.path, targets[fid]))
                continue
            owner = wanted.get(layout.fold(fs.path))
            if owner is not None and owner != fid:
                moves.append((fid, fs.path, self._aside_path(fs, wanted)))
        if not moves:
            return
        moving = self.dest / MOVING_DIR
        moving.mkdir(parents=True, exist_ok=True)
        staged: list[tuple[int, str, str]] = []
        for fid, old, new in moves:
            fs = tracked[fid]
            if stat_fingerprint(self.dest / old) is None:
                fs.path = None  # gone from disk; it will be downloaded again
                state.put(fs)
                continue
            tmp = f"{MOVING_DIR}/{fid}"
            move_within(self.dest, old, tmp)
            fs.path = tmp
            state.put(fs)
            staged.append((fid, old, new))
        for fid, old, new in staged:
            fs = tracked[fid]
            move_within(self.dest, fs.path or "", new)
            fs.path = new
            state.put(fs)
            self._prune_dirs(old)
            if fid in listed:
                self._renamed.add(fid)
                self._report(FileResult(fid, new, "renamed", fs.size, fs.sha256))

    def _aside_path(self, fs: FileState, wanted: dict[str, int]) -> str:
        assert fs.path is not None
        head, _, name = fs.path.rpartition("/")
        candidate = f"{head}/{layout.id_name(name, fs.id)}"
        n = 2
        while layout.fold(candidate) in wanted:
            candidate = f"{head}/{layout.id_name(name, fs.id, n)}"
            n += 1
        return candidate

    def _prune_dirs(self, relpath: str) -> None:
        """Remove directories a move or delete left empty (never DEST or .ohpub)."""
        parts = relpath.split("/")[:-1]
        while parts and parts[0] != ".ohpub":
            try:
                os.rmdir(self.dest.joinpath(*parts))
            except OSError:
                return
            parts.pop()

    # -- results -----------------------------------------------------------------------------

    def _collect(
        self,
        state: StateDB,
        pending: dict[Future[_Outcome], DataFile],
        targets: dict[int, str],
        tracked: dict[int, FileState],
    ) -> None:
        """Place downloads as they finish; report files that needed nothing."""
        busy = set(f.id for f in pending.values())
        for fid, fs in tracked.items():
            if (
                fid in targets
                and fid not in busy
                and fid not in self._renamed
                and fs.status == "present"
            ):
                self._report(FileResult(fid, fs.path, "unchanged", fs.size, fs.sha256))
        remaining = len(pending)
        while remaining:
            try:
                fut = self._done.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            batch = [fut]
            while len(batch) < self.BATCH:
                try:
                    batch.append(self._done.get_nowait())
                except queue.Empty:
                    break
            remaining -= len(batch)
            self._apply_batch(state, [(pending[b], b) for b in batch], targets, tracked)

    BATCH = 64
    """Results committed together: renames first, then one fsync per directory and one
    state transaction for all of them, instead of two fsyncs per file on the main thread.
    A crash loses at most the files of the batch in flight (they are re-downloaded)."""

    def _apply_batch(
        self,
        state: StateDB,
        items: list[tuple[DataFile, Future[_Outcome]]],
        targets: dict[int, str],
        tracked: dict[int, FileState],
    ) -> None:
        records: list[FileState] = []
        dirs: set[str] = set()
        removals: list[str] = []
        results: list[FileResult] = []
        for f, fut in items:
            try:
                out = fut.result()
            except (Cancelled, CancelledError):
                continue
            r = self._apply(f, out, targets[f.id], tracked[f.id], records, dirs, removals)
            if r is not None:
                results.append(r)
        if dirs:
            sync_dirs(self.dest, dirs)
        state.put_many(records)
        for old in removals:
            remove_within(self.dest, old)  # never a path another listed file now owns
        for r in results:
            self._report(r)

    def _apply(
        self,
        f: DataFile,
        out: _Outcome,
        target: str,
        fs: FileState,
        records: list[FileState],
        dirs: set[str],
        removals: list[str],
    ) -> FileResult | None:
        """One finished worker result: update ``fs`` (into ``records``) and place the file.

        Returns the result to report once the batch is durable; failures are reported at
        once (on a full disk the state write fails too, and the user must still learn which
        file failed and why).
        """
        if out.kind == "kept":
            assert out.fp is not None
            fs.size, fs.mtime_ns = out.fp
            fs.status = "present"
            records.append(fs)
            return FileResult(f.id, fs.path, "unchanged", fs.size, fs.sha256)
        if out.kind in ("unavailable", "skipped", "error"):
            status = {"unavailable": "unavailable", "skipped": "skipped", "error": "failed"}[
                out.kind
            ]
            self._report(FileResult(f.id, fs.path or target, status, out.size, None, out.error))
            if fs.status not in ("present",):
                fs.status = "unavailable" if out.kind == "unavailable" else "failed"
                if out.kind == "skipped":
                    fs.status = "pending"
                records.append(fs)
            return None
        d = out.download
        assert d is not None
        part = partial_dir(self.dest) / str(f.id)
        old_path = fs.path
        try:
            place(part, self.dest, target, sync=False)
        except (DiskError, UsageError) as exc:
            self._report(FileResult(f.id, target, "failed", d.size, d.sha256, exc.message))
            return None
        dirs.add(target.rpartition("/")[0])
        forget_partial(part, root=self.dest)  # h4: no symlink followed below DEST
        fp = stat_fingerprint(self.dest / target)
        fs.path = target
        fs.size, fs.mtime_ns = fp if fp else (d.size, None)
        fs.sha256, fs.md5, fs.etag = d.sha256, d.md5, d.etag
        fs.downloaded_at = time.time()
        fs.status = "present"
        records.append(fs)
        if old_path and old_path != target and self._wanted.get(layout.fold(old_path)) is None:
            removals.append(old_path)
        self.summary.bytes_downloaded += d.size
        self.summary.bytes_transferred += d.transferred
        return FileResult(f.id, target, "resumed" if d.resumed else "downloaded", d.size, d.sha256)

    def _upstream_removals(
        self,
        state: StateDB,
        listed: dict[int, layout.Entry],
        report: ListingReport,
        tracked: dict[int, FileState],
    ) -> None:
        """Files a complete listing of this scope no longer has: keep (mark), or --delete."""
        if not report.complete:
            return
        self._clean_partials(listed)
        flt = self.opts.flt
        gone: list[FileState] = []
        in_scope = len(listed)  # every listed file matched the filter
        for fs in tracked.values():
            if fs.id in listed:
                continue
            rec = record_of(fs)
            if rec is None or not flt.matches(rec):
                continue
            in_scope += 1
            gone.append(fs)
        refuse = ""
        if self.opts.delete and len(gone) > SHRINK_MIN and len(gone) * 2 > in_scope:
            refuse = (
                f"--delete refused: the listing would remove {len(gone)} of {in_scope} files "
                "in scope, which looks like an upstream hiccup; files kept"
            )
            self.summary.warnings.append(refuse)
            self.events.warning(refuse)
        for fs in gone:
            if self.opts.delete and not refuse:
                if fs.path:
                    remove_within(self.dest, fs.path)
                    self._prune_dirs(fs.path)
                state.delete(fs.id)
                self._report(FileResult(fs.id, fs.path, "deleted", fs.size, fs.sha256))
                continue
            if fs.status != "removed-upstream":
                fs.status = "removed-upstream" if fs.path else "unavailable"
                state.put(fs)
            self._report(FileResult(fs.id, fs.path, "removed-upstream", fs.size, fs.sha256))
        if refuse:
            self.summary.exit_code = 1

    def _clean_partials(self, listed: dict[int, layout.Entry]) -> None:
        """Partial downloads of files a complete listing no longer has will never finish."""
        pdir = partial_dir(self.dest)
        with contextlib.suppress(OSError):
            for entry in os.scandir(pdir):
                stem = entry.name.split(".", 1)[0]
                if stem.isdigit() and int(stem) not in listed:
                    forget_partial(pdir / stem, root=self.dest)  # h4: no-follow

    def _report(self, r: FileResult) -> None:
        self.summary.counts[r.status] = self.summary.counts.get(r.status, 0) + 1
        self.events.result(r)

    def _finish(self) -> None:
        c = self.summary.counts
        bad = c["failed"] + (c["unavailable"] if self.opts.strict else 0)
        if bad or not self.summary.listing_complete:
            self.summary.exit_code = 1
        self.summary.elapsed = time.monotonic() - self._started

    # -- the index ---------------------------------------------------------------------------

    def _write_index(self, state: StateDB) -> None:
        """Rewritten after every run that changed a record (or when it is missing): an
        up-to-date mirror of 100,000 files skips 100,000 lines of JSON."""
        if state.changes or self._index_stale or not (self.dest / INDEX_NAME).is_file():
            write_index(self.dest, state)

    # -- dry run ------------------------------------------------------------------------------

    def _dry_run(self) -> MirrorSummary:
        """The plan with totals; nothing is written (not even .ohpub) and nothing downloaded."""
        prepare_dest(self.dest, create=False)
        tracked: dict[int, FileState] = {}
        if state_db_path(self.dest).exists():
            with StateDB.open(self.dest, create=False) as state:
                tracked = {fs.id: fs for fs in state.all()}
        report = ListingReport()
        listed = {f.id: f for f in self.client.iter_files(self.opts.flt, report)}
        self.events.listed(len(listed))
        self._listed_count = len(listed)
        self.summary.listing_complete = report.complete
        targets = layout.plan_paths(layout.Entry.of(f) for f in listed.values())
        to_fetch: list[DataFile] = []
        for fid, f in listed.items():
            ts = tracked.get(fid)
            fp = stat_fingerprint(self.dest / ts.path) if ts and ts.path else None
            if ts and ts.status == "present" and fp == (ts.size, ts.mtime_ns):
                status = "renamed" if ts.path != targets[fid] else "unchanged"
                self._report(FileResult(fid, targets[fid], status, ts.size, ts.sha256))
            else:
                to_fetch.append(f)
        with ThreadPoolExecutor(max_workers=max(1, self.opts.jobs)) as pool:
            sizes = dict(
                zip([f.id for f in to_fetch], pool.map(self._probe, to_fetch), strict=True)
            )
        for f in to_fetch:
            size, err = sizes[f.id]
            if err is not None:
                self._report(FileResult(f.id, targets[f.id], "unavailable", None, None, err))
                continue
            if self.opts.max_size is not None and size is not None and size > self.opts.max_size:
                self._report(
                    FileResult(f.id, targets[f.id], "skipped", size, None, "larger than --max-size")
                )
                continue
            self.summary.bytes_planned += size or 0
            self._report(FileResult(f.id, targets[f.id], "planned", size))
        if report.complete:
            for fid, fs in tracked.items():
                rec = record_of(fs)
                if fid in listed or rec is None or not self.opts.flt.matches(rec):
                    continue
                status = "deleted" if self.opts.delete else "removed-upstream"
                self._report(FileResult(fid, fs.path, status, fs.size, fs.sha256))
        self._finish()
        return self.summary

    def _probe(self, f: DataFile) -> tuple[int | None, str | None]:
        try:
            return self.downloader.probe_size(f), None
        except OhpubError as exc:
            return None, exc.message


def _stable(raw: dict[str, Any]) -> dict[str, Any]:
    """A record without what changes between identical listings: the server sends
    ``datatypes`` in a different order on every request."""
    dts = raw.get("datatypes")
    if isinstance(dts, list) and all(isinstance(d, str) for d in dts):
        return {**raw, "datatypes": sorted(dts)}
    return raw


def write_index(dest: Path, state: StateDB) -> None:
    """Rewrite DEST/index.jsonl atomically: one line per tracked file, for pandas and jq.

    Written through tree.write_atomic (h4): a fresh temporary file in ``.ohpub`` and a
    rename, no symlink below DEST followed.
    """

    def lines() -> Iterator[bytes]:
        for fs in state.iter_all():
            rec = dict(fs.raw)
            rec.update(
                {
                    "project_id": fs.project_id,
                    "datatype_ids": fs.datatype_ids,
                    "username": fs.username,
                    "path": fs.path,
                    "bytes": fs.size,
                    "sha256": fs.sha256,
                    "md5": fs.md5,
                    "status": fs.status,
                }
            )
            yield (json.dumps(rec, ensure_ascii=False, sort_keys=False) + "\n").encode()

    write_atomic(dest, INDEX_NAME, lines(), tmp_relpath=f"{OHPUB_DIR}/{INDEX_NAME}.tmp")
