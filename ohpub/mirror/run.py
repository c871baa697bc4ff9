"""One mirror run: list, plan, transfer, commit, report. The dry run is the same run.

``ohpub mirror DEST`` goes: cli.mirror_cmd -> ``Mirror.run`` (this module: DEST checks,
lock, state, run record) -> ``_Run.execute``:

1. **List and plan.** The listing streams in (``ApiClient.iter_files``) a batch at a
   time. For each file the state's narrow row is read (``StateDB.known_many``), the disk facts
   are taken (stat fingerprint, resumable partial), and ``plan.file_action`` decides:
   KEEP, REHASH, DOWNLOAD or RESUME. The batch is recorded in ``listed.Listed`` (on
   disk, not in memory) and work is handed to the workers at once, so transfers overlap
   the rest of the listing.
2. **Work** (``work.Worker``, on worker threads): a REHASH reads the file (sha256 only)
   and ``plan.after_rehash`` keeps it or sends it to DOWNLOAD; a download goes into
   ``.ohpub/partial/<id>`` (``transfer.downloader.Downloader``, verified, not yet
   placed). In a dry run the same step is a one-byte size probe instead.
3. **Paths.** With the listing complete, ``layout`` fixes every file's path, one
   directory at a time (``Listed.plan_targets``); kept files whose path changed are
   moved (``commit.Committer.reconcile``), files in the way that are no longer listed
   are moved aside.
4. **Commit.** Finished downloads are collected (``collect.Collector``, from the workers'
   queue, as they finish) and placed a batch at a time (one fsync per directory and one
   state transaction per batch; ``commit.Committer.place``).
5. **Removals.** Files a complete listing of the scope no longer has are marked
   removed-upstream (or deleted with ``--delete``); stale partials of this scope are
   dropped; ``index.jsonl`` is rewritten when something changed.

Only the main thread writes to the state or the tree; workers only fill partial files.
The dry run opens nothing for writing: its ``Committer`` only reports.

The run works under a cancel token of its own (``model.cancel``; a child of the client's,
so Ctrl-C reaches it): any exception in any phase cancels it at once, and every wait of
every worker (backoffs, slots, reads) gives up; the run waits ``GRACE`` seconds at most
for them before the exception goes on. A batch is placed in a ``shielded`` section: a
signal never cuts it between the renames and the state transaction that records them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ohpub.local.dest import LocalDest
from ohpub.local.index import INDEX_NAME
from ohpub.local.lock import DestLock
from ohpub.local.state import FileState, Known, RunInfo, StateDB, ensure_dirs, state_db_path
from ohpub.mirror.bucketrun import dry_into_bucket, run_into_bucket
from ohpub.mirror.collect import Collector
from ohpub.mirror.commit import Committer
from ohpub.mirror.listed import Listed
from ohpub.mirror.removals import Removals
from ohpub.mirror.types import (
    Events,
    FileResult,
    Finished,
    MirrorOptions,
    MirrorSummary,
    NullEvents,
    WorkItem,
)
from ohpub.mirror.work import Worker, fresh_state, known_view, unchanged
from ohpub.model import plan
from ohpub.model.cancel import CancelToken, DaemonPool, shielded
from ohpub.model.errors import NetworkError, OhpubError, StateError, UsageError
from ohpub.model.records import Action, DataFile, FileStatus
from ohpub.remote.client import ApiClient as Client
from ohpub.remote.listing import ListingReport

log = logging.getLogger("ohpub")

LIST_BATCH = 200
"""Listed files planned together: one state query per batch."""
IN_FLIGHT = 1024
"""Work items handed out at most (``_max_in_flight``)."""
STATE_BATCH = 2000
"""New or changed records written together (one fsynced transaction)."""
GRACE = 1.0
"""Seconds a cancelled run waits for its workers to let go (a worker in a read that only
its timeout ends is a daemon thread: it does not hold the process up)."""


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


class Mirror:
    """One mirror run over DEST. Create, then call ``run()``; each call is a new run."""

    def __init__(self, client: Client, opts: MirrorOptions, events: Events | None = None) -> None:
        self.client = client
        self.opts = opts
        self.events: Events = events or NullEvents()

    def run(self) -> MirrorSummary:
        """Carry out the run (or, with ``dry_run``, report what it would do)."""
        if self.opts.dry_run:
            if self.opts.url is not None:
                return dry_into_bucket(self.opts, self._dry_with)
            return self._dry()
        if self.opts.url is not None:
            return run_into_bucket(self.opts, self._recorded, self.client.cancel)
        dest = self.opts.dest
        prepare_dest(dest, create=True)
        refuse_lost_state(dest)
        ensure_dirs(dest)
        with DestLock(dest), StateDB.open(dest) as state:
            return self._recorded(state)

    def _recorded(self, state: StateDB) -> MirrorSummary:
        """The real run, with its begin/end in the state's run history."""
        prev = state.last_run()
        index_stale = prev is not None and prev.ended is None  # killed last time
        run_id = state.begin_run("mirror", {"scope": self.opts.flt.scope_key()})
        run = _Run(self.client, self.opts, self.events, state, after_ok=_ok(prev))
        outcome = "failed"
        try:
            run.execute()
            outcome = "ok" if run.summary.ok else "failed"
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM, a cancelled token (Cancelled)
            outcome = "interrupted"
            raise
        except OhpubError as exc:
            run.summary.first_error = run.summary.first_error or str(exc)
            raise
        finally:
            run.summary.elapsed = time.monotonic() - run.started
            target = self.opts.destination or LocalDest(self.opts.dest)
            if state.changes or index_stale or not target.has_index():
                with contextlib.suppress(OhpubError, OSError):
                    target.write_index(state)
            counts = {str(k): v for k, v in run.summary.counts.items() if v}
            complete = run.summary.listing_complete and outcome != "interrupted"
            error = run.summary.first_error if outcome == "failed" else None
            with shielded():  # a second Ctrl-C does not lose how this run ended
                state.end_run(run_id, outcome, counts, complete=complete, error=error)
        return run.summary

    def _dry(self) -> MirrorSummary:
        """The plan with totals; nothing is written (not even .ohpub) and nothing downloaded."""
        dest = self.opts.dest
        prepare_dest(dest, create=False)
        state: StateDB | None = None
        if state_db_path(dest).exists():
            state = StateDB.open(dest, create=False, readonly=True)  # h4: writes nothing
        try:
            return self._dry_with(state)
        finally:
            if state is not None:
                state.close()

    def _dry_with(self, state: StateDB | None) -> MirrorSummary:
        """The dry run over a state opened read-only (or none: a new DEST)."""
        prev = state.last_run() if state is not None else None
        run = _Run(self.client, self.opts, self.events, state, dry=True, after_ok=_ok(prev))
        run.execute()
        run.summary.elapsed = time.monotonic() - run.started
        return run.summary


class _Run:
    """The phases of one run (see the module docstring), real or dry."""

    def __init__(
        self,
        client: Client,
        opts: MirrorOptions,
        events: Events,
        state: StateDB | None,
        *,
        dry: bool = False,
        after_ok: bool = True,
    ) -> None:
        self.opts = opts
        self.after_ok = after_ok
        """The last run ended ok: a directory whose placed files are exactly the listed
        ones is laid out as that run planned it (``Listed.plan_targets``' settled
        shortcut). After a failed or interrupted run (a directory it did not list
        completely kept its files where they were) every directory is planned again."""
        self.events = events
        self.state = state
        self.dry = dry
        self.client = client.scoped()
        self.cancel: CancelToken = self.client.cancel
        """The run's token: Ctrl-C cancels it (through the client's), and so does any
        exception of any phase."""
        self.summary = MirrorSummary()
        self.started = time.monotonic()
        self.listed = Listed()
        self.commit = Committer(opts, state, self.listed, self._report, dry=dry)
        self.removals = Removals(opts, state, self.listed, self._report, dry=dry)
        self.worker = Worker(self.client, opts, events, dry=dry)
        self.collector = Collector(
            self.worker, self.listed, self.commit, events, self.summary, self.cancel
        )
        self._changed: list[FileState] = []
        self._seen: list[int] = []

    def execute(self) -> None:
        """List and plan, work, fix paths, commit, remove: the whole run. Whatever any
        phase raises cancels every worker at once (their waits give up) before it goes on."""
        pool = DaemonPool(self.opts.jobs + self.client.api_concurrency, "ohpub")
        try:
            failed = self._phases(pool)
        except BaseException:
            self.cancel.cancel()
            raise
        finally:
            # After a failure, what is already downloaded stays in the partial folder for
            # the next run; nothing may be deleted or marked removed.
            if not pool.shutdown(wait=GRACE if self.cancel.cancelled else None):
                log.debug("workers still in a read when the run ended; left to their timeout")
            self.listed.close()
        self._finish()
        if failed is not None:  # after a listing that failed midway: placed what it could
            raise _placed_despite(failed, self.summary)

    def _phases(self, pool: DaemonPool) -> OhpubError | None:
        """The phases; returns the listing's own error when it failed midway (what it
        listed was still worked on, and placed where certain), to be raised at the end."""
        report = ListingReport()
        failed = self._list_and_plan(pool, report)
        if failed is not None and not len(self.listed):
            raise failed  # nothing listed: nothing to place
        self._save_listed(time.time())
        self.events.listing_done(len(self.listed))
        self.summary.listing_complete = report.complete
        self.summary.warnings.extend(report.warnings)
        self._report_rejected(report)
        self._drain(pool, until=0, only_rehash=True)
        self.cancel.check()
        placed = self.commit.placed_per_dir() if self.after_ok else {}  # {}: nothing settled
        # Only directories listed completely get their names; the others keep what is
        # placed and their new downloads wait (verified) for the next run.
        frozen = self.commit.incomplete_dirs(report.rejected)
        self.listed.plan_targets(placed, frozen, report.directory_complete)
        self.commit.reconcile()
        self._drain(pool, until=0)
        self.collector.commit_finished()
        if self.worker.dead is not None:
            raise NetworkError(
                self.worker.dead, hint="finished files are kept; a rerun resumes the rest"
            )
        self.commit.report_kept()
        self.cancel.check()
        if report.complete and all(r.file_id is not None for r in report.rejected):
            # (an item without a usable id could be any tracked file: remove nothing)
            self.removals.run(self.summary)
            self.removals.clean_partials()
        return failed

    # -- 1. list and plan ------------------------------------------------------------------

    def _list_and_plan(self, pool: DaemonPool, report: ListingReport) -> OhpubError | None:
        """Plan the listing as it arrives; returns the listing's own error when it failed
        midway (what it listed is still worked on, and placed where certain)."""
        files = self.client.iter_files(self.opts.flt, report)
        expected = 0
        batches = _Batches(files, LIST_BATCH, self.cancel)
        try:
            for batch in batches:
                self._plan_batch(pool, batch)
                self.events.listed(len(self.listed))
                if report.expected != expected and report.expected:
                    expected = report.expected
                    self.events.expected(expected)
                self._drain(pool, until=self._max_in_flight())
        except OhpubError as exc:
            if exc is not batches.error:
                raise
            return exc
        return None

    def _plan_batch(self, pool: DaemonPool, batch: list[DataFile]) -> None:
        """Plan one batch: read its state, take the disk facts, decide, record, hand out."""
        now = time.time()
        known, same, rows = self._known(batch)
        planned = []
        work: list[WorkItem] = []
        waited: list[Finished] = []
        for f in batch:
            if f.id in self.listed.ids:
                continue  # listed twice (two endpoints of one scope)
            if f.id in same:
                self._seen.append(f.id)
                tv = known_view(known[f.id])
            else:
                fs, tv = fresh_state(f, rows.get(f.id), now)
                self._changed.append(fs)
            action = plan.file_action(
                tv, self.worker.disk_facts(f.id, tv), checksum=self.opts.checksum
            )
            planned.append((f, action, tv.path, tv.size, tv.sha256))
            if action is Action.PLACE:  # downloaded by a run before: nothing to fetch
                waited.append(Finished(f.id, action, action, size=tv.size, sha256=tv.sha256))
            elif action is not Action.KEEP:
                work.append(WorkItem(f, tv, action))
        self.listed.add(planned)
        self.events.kept(len(planned) - len(work) - len(waited))  # before any transfer
        for item in work:
            self._submit(pool, item)
        for done in waited:
            self._add_finished(done)
        if len(self._changed) >= STATE_BATCH:
            self._save_listed(now)  # while the listing goes on, not all at its end

    def _known(
        self, batch: list[DataFile]
    ) -> tuple[dict[int, Known], set[int], dict[int, FileState]]:
        """What the state knows of a batch: a narrow row per known file, the ids whose
        record the listing leaves unchanged, and the whole records of the others (read
        only for them: a nightly re-run parses almost nothing)."""
        if self.state is None:
            return {}, set(), {}
        known = self.state.known_many(f.id for f in batch)
        same = {f.id for f in batch if (k := known.get(f.id)) is not None and unchanged(f, k)}
        rows = self.state.get_many(i for i in known if i not in same)
        return known, same, rows

    def _save_listed(self, now: float) -> None:
        """Write new and changed records (before anything of theirs is placed), and
        ``last_seen`` of the unchanged ones: a few transactions for the whole listing."""
        if self.state is not None and not self.dry:
            self.state.put_many(self._changed)
            self.state.mark_seen(self._seen, now)
        self._changed, self._seen = [], []

    def _submit(self, pool: DaemonPool, item: WorkItem) -> None:
        self.collector.submit(pool, item)

    def _max_in_flight(self) -> int:
        """Work handed out but not collected, at most: bounds memory on a big seed run
        (a queued item is a few KB). Large enough that a run of a few hundred files hands
        out all of them at once: the paths are fixed, and finished files placed as they
        come, only once the listing loop is through (with 96, a run of 600 small files
        placed nothing until 500 were downloaded, then committed the backlog at the end)."""
        return max(IN_FLIGHT, (self.opts.jobs + self.client.api_concurrency) * 8)

    # -- 2. collect work (``mirror.collect``) ---------------------------------------------

    def _drain(self, pool: DaemonPool, *, until: int, only_rehash: bool = False) -> None:
        self.collector.drain(pool, until=until, only_rehash=only_rehash)

    def _add_finished(self, done: Finished) -> None:
        self.collector.add_finished(done)

    # -- reports ---------------------------------------------------------------------------

    def _report(self, r: FileResult) -> None:
        self.summary.counts[r.status] = self.summary.counts.get(r.status, 0) + 1
        bad = r.status is FileStatus.FAILED or (
            self.opts.strict and r.status is FileStatus.UNAVAILABLE
        )
        if bad and self.summary.first_error is None:
            self.summary.first_error = f"{r.path}: {r.error}" if r.path else r.error
        self.events.result(r)

    def _report_rejected(self, report: ListingReport) -> None:
        """Listing items that are not valid records: named failures, never silence."""
        for rej in report.rejected:
            if rej.file_id is not None:
                self.listed.ids.add(rej.file_id)  # listed (badly): never "removed upstream"
            self._report(FileResult(rej.file_id, None, FileStatus.FAILED, error=rej.message()))

    def _finish(self) -> None:
        c = self.summary.counts
        bad = c[FileStatus.FAILED] + (c[FileStatus.UNAVAILABLE] if self.opts.strict else 0)
        if bad or not self.summary.listing_complete or self.removals.refused:
            self.summary.ok = False
        if not self.summary.listing_complete and self.summary.first_error is None:
            why = self.summary.warnings[-1] if self.summary.warnings else "some files missing"
            self.summary.first_error = f"listing incomplete: {why}"


def _ok(run: RunInfo | None) -> bool:
    """A previous run after which the settled shortcut holds (no run: nothing is placed)."""
    return run is None or run.outcome == "ok"


def _placed_despite(failed: OhpubError, summary: MirrorSummary) -> OhpubError:
    """The listing's error, with what the run still did: placed what was certain."""
    waiting = summary.counts.get(FileStatus.WAITING, 0)
    note = "the files of completely listed directories are in place"
    if waiting:
        note += f"; {waiting} verified downloads wait in .ohpub/partial for the next run"
    failed.hint = f"{failed.hint}; {note}" if failed.hint else note
    return failed


class _Batches:
    """The listing as batches of up to ``n`` files, read on a thread of its own.

    A batch is handed on when it is full or when the listing has nothing more ready
    (it waits for a page), so downloads start with the first page, while a big listing
    still costs one state query and one state write per ``n`` files. The queue is
    bounded: a listing far ahead of the planner waits.
    """

    _END = object()

    def __init__(self, items: Iterator[DataFile], n: int, cancel: CancelToken) -> None:
        self._items = items
        self._n = n
        self._cancel = cancel
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=4 * n)
        self._stop = threading.Event()
        self.error: OhpubError | None = None
        """The listing's own error, once it raised one."""
        self._thread = threading.Thread(target=self._produce, name="ohpub-listing", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            if isinstance(exc, OhpubError):
                self.error = exc
            self._put(_Raised(exc))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set() and not self._cancel.cancelled:
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[list[DataFile]]:
        try:
            while True:
                first = self._get(block=True)
                if first is self._END:
                    return
                batch = [first]
                while len(batch) < self._n:
                    item = self._get(block=False)
                    if item is None:
                        break
                    if item is self._END or isinstance(item, _Raised):
                        yield batch  # what came before an error is planned first
                        if isinstance(item, _Raised):
                            raise item.exc
                        return
                    batch.append(item)
                yield batch
        finally:
            self._stop.set()

    def _get(self, *, block: bool) -> Any:
        while True:
            try:
                item = self._cancel.get(self._queue) if block else self._queue.get_nowait()
            except queue.Empty:
                return None
            if isinstance(item, _Raised) and block:
                raise item.exc
            return item


@dataclass
class _Raised:
    exc: BaseException


__all__ = [
    "Mirror",
    "MirrorOptions",
    "MirrorSummary",
    "Events",
    "NullEvents",
    "FileResult",
    "prepare_dest",
    "refuse_lost_state",
]
