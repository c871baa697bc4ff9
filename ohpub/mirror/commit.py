"""Applying the plan to DEST and the state: moves, placements, removals, and the reports.

The main thread's half of a run. In a dry run the same ``Committer`` walks the same
decisions and only reports them, so the dry run's records are the real run's records
with ``planned`` where the real run says ``downloaded``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ohpub.local.dest import Destination, LocalDest, facts_of
from ohpub.local.state import FileState, StateDB, partial_dir, stat_fingerprint
from ohpub.local.tree import DiskError
from ohpub.mirror.listed import Listed
from ohpub.mirror.types import FileResult, Finished, MirrorOptions, MirrorSummary
from ohpub.model import layout, plan
from ohpub.model.errors import UsageError
from ohpub.model.records import (
    Action,
    FileStatus,
    RecordError,
    Rejected,
    StateStatus,
    parse_datafile,
)

MOVING_DIR = ".ohpub/moving"
PLACEABLE = (Action.DOWNLOAD, Action.RESUME, Action.PLACE)
"""Finished work whose verified bytes wait in the partial: a download, or one a run
before kept waiting."""


def record_of(fs: FileState) -> Any:
    """Rebuild a DataFile from the state, for scope checks of files no longer listed."""
    try:
        return parse_datafile({**fs.raw, "download_url": "https://stored.invalid/"})
    except RecordError:
        return None


class Phase:
    """What every phase after the listing works with: the options, the state (None in a
    dry run of a new DEST), the run's listing, the reporter, and whether it is dry."""

    def __init__(
        self,
        opts: MirrorOptions,
        state: StateDB | None,
        listed: Listed,
        report: Callable[[FileResult], None],
        *,
        dry: bool,
    ) -> None:
        self.opts = opts
        self.dest = opts.dest
        self.target: Destination = opts.destination or LocalDest(opts.dest)
        self.state = state
        self.listed = listed
        self.report = report
        self.dry = dry


class Committer(Phase):
    """Carries out (or, dry, reports) the plan's effects on DEST and the state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refreshed: list[Finished] = []

    def refresh_fingerprint(self, done: Finished) -> None:
        """A re-hash confirmed the bytes: remember the new size and mtime (real run)."""
        if not self.dry:
            self._refreshed.append(done)

    def placed_per_dir(self) -> Counter[str]:
        """How many tracked files are placed in each directory (one cheap pass)."""
        counts: Counter[str] = Counter()
        if self.state is not None:
            for _fid, path, status in self.state.iter_paths():
                if path and status in plan.PLACED:
                    counts[path.rpartition("/")[0]] += 1
        return counts

    def incomplete_dirs(self, rejected: list[Rejected]) -> dict[str, set[str]]:
        """The directories a rejected record may belong to, each with the (folded) paths
        placed in it: where the listing is not complete, so the layout must not change.

        A rejected record with an id is the file the state knows by that id; one without
        is any placed file of the scope that this listing did not bring."""
        if not rejected or self.state is None:
            return {}
        ids = {r.file_id for r in rejected if r.file_id is not None}
        anonymous = len(ids) < len(rejected)
        dirs: set[str] = set()
        placed: list[tuple[str, str]] = []
        for fid, path, status in self.state.iter_paths():
            if not path or status not in plan.PLACED:
                continue
            directory = path.rpartition("/")[0]
            placed.append((directory, path))
            if fid in ids or (anonymous and fid not in self.listed.ids and self._in_scope(fid)):
                dirs.add(directory)
        out: dict[str, set[str]] = {d: set() for d in dirs}
        for directory, path in placed:
            if directory in out:
                out[directory].add(layout.fold(path))
        return out

    def _in_scope(self, fid: int) -> bool:
        fs = self.state.get(fid) if self.state is not None else None
        rec = record_of(fs) if fs is not None else None
        return rec is not None and self.opts.flt.matches(rec)

    def reconcile(self) -> None:
        """Move kept files whose path changed; move aside unlisted files in the way.

        Every move goes through ``.ohpub/moving/<id>`` first, so chains and swaps of names
        cannot overwrite each other, and a crash between the two steps leaves each file
        at a path the state knows.
        """
        self._save_refreshed()
        moves: list[tuple[int, str, str]] = []
        for k in self.listed.moved():
            action = plan.placed_action(k.action, k.path, k.target)
            if action is Action.RENAME and k.path is not None and k.target is not None:
                self.listed.set_action(k.id, Action.RENAME)
                moves.append((k.id, k.path, k.target))
        state = self.state
        if state is None or self.dry:
            return
        moves.extend(self._in_the_way(state))
        if moves:
            self._move(state, moves)

    def _in_the_way(self, state: StateDB) -> list[tuple[int, str, str]]:
        """Unlisted placed files at a path a listed file now owns: moved to an id name."""
        unlisted = [
            (fid, path)
            for fid, path, status in state.iter_paths()
            if path and fid not in self.listed.ids and status in plan.PLACED
        ]
        owners = self.listed.owners(layout.fold(p) for _, p in unlisted)
        out: list[tuple[int, str, str]] = []
        for fid, path in unlisted:
            owner = owners.get(layout.fold(path))
            if owner is not None and owner != fid:
                out.append((fid, path, self._aside_path(fid, path)))
        return out

    def _aside_path(self, fid: int, path: str) -> str:
        head, _, name = path.rpartition("/")
        n = 1
        while True:
            candidate = f"{head}/{layout.id_name(name, fid, n)}"
            if not self.listed.owners([layout.fold(candidate)]):
                return candidate
            n += 1

    def _move(self, state: StateDB, moves: list[tuple[int, str, str]]) -> None:
        (self.dest / MOVING_DIR).mkdir(parents=True, exist_ok=True)
        records = state.get_many([fid for fid, _, _ in moves])
        staged: list[tuple[FileState, str, str]] = []
        for fid, old, new in moves:
            fs = records[fid]
            if self.target.fingerprint(old) is None:
                fs.path = None  # gone from disk; it will be downloaded again
                state.put(fs)
                continue
            tmp = f"{MOVING_DIR}/{fid}"
            self.target.move(old, tmp)
            fs.path = tmp
            state.put(fs)
            staged.append((fs, old, new))
        for fs, old, new in staged:
            self.target.move(fs.path or "", new)
            fs.path = new
            state.put(fs)
            self.target.prune(old)

    def _save_refreshed(self) -> None:
        if not self._refreshed or self.state is None:
            return
        records = self.state.get_many([d.id for d in self._refreshed])
        for d in self._refreshed:
            fs = records.get(d.id)
            if fs is not None and d.fp is not None:
                fs.size, fs.mtime_ns = d.fp
                fs.status = plan.placed_status().value
        self.state.put_many(records.values())
        self._refreshed = []

    def report_kept(self) -> None:
        """One record per file the plan kept: ``unchanged``, or ``renamed`` when it moved."""
        self._save_refreshed()
        for k in self.listed.kept():
            status = FileStatus.RENAMED if k.action is Action.RENAME else FileStatus.UNCHANGED
            path = k.target or k.path  # (no target: a directory listed incompletely)
            self.report(FileResult(k.id, Path(path) if path else None, status, k.size, k.sha256))

    # -- finished work -------------------------------------------------------------------------

    def place(self, batch: list[Finished], summary: MirrorSummary) -> None:
        """Place a batch of finished downloads (or, dry, report them as planned)."""
        targets = self.listed.targets([d.id for d in batch])
        if self.dry or self.state is None:
            for d in batch:
                self._report_dry(d, targets[d.id], summary)
            return
        records = self.state.get_many([d.id for d in batch])
        self.target.prepare(
            [
                (
                    partial_dir(self.dest) / str(d.id),
                    target,
                    facts_of(records[d.id], d.sha256, d.md5 or records[d.id].md5),
                )
                for d in batch
                if d.action in PLACEABLE and d.sha256 and (target := targets[d.id]) is not None
            ]
        )
        dirs: set[str] = set()
        removals: list[str] = []
        results: list[FileResult] = []
        changed: list[FileState] = []
        for d in batch:
            fs = records[d.id]
            target = targets[d.id]
            if target is None:
                r = self._wait(d, fs)
            else:
                r = self._apply(d, target, fs, dirs, removals, summary)
            changed.append(fs)
            if r is not None:
                results.append(r)
        if dirs:
            self.target.sync(dirs)
        self.state.put_many(changed)
        for old in removals:
            self.target.remove(old)  # never a path another listed file now owns
        for r in results:
            self.report(r)

    def _report_dry(self, d: Finished, target: str | None, summary: MirrorSummary) -> None:
        action = d.action or Action.DOWNLOAD
        status = plan.DRY_STATUS[action]
        if status is FileStatus.PLANNED and action is not Action.PLACE:
            summary.bytes_planned += d.size or 0
        error = "larger than --max-size" if action is Action.SKIP else d.error
        self.report(FileResult(d.id, Path(target) if target else None, status, d.size, None, error))

    def _apply(
        self,
        d: Finished,
        target: str,
        fs: FileState,
        dirs: set[str],
        removals: list[str],
        summary: MirrorSummary,
    ) -> FileResult | None:
        """One finished download: place it and update ``fs``. Failures are reported at
        once (on a full disk the state write fails too, and the user must still learn
        which file failed and why); successes once the batch is durable."""
        if d.action not in PLACEABLE or d.sha256 is None:
            self._failed(d, target, fs)
            return None
        part = partial_dir(self.dest) / str(d.id)
        old_path = fs.path
        try:
            fp = self.target.place(part, target, facts_of(fs, d.sha256, d.md5 or fs.md5))
        except (DiskError, UsageError) as exc:
            self.report(
                FileResult(d.id, Path(target), FileStatus.FAILED, d.size, d.sha256, exc.message)
            )
            return None
        dirs.add(target.rpartition("/")[0])
        fs.path = target
        fs.size, fs.mtime_ns = fp if fp else (d.size, None)
        if d.action is not Action.PLACE:  # (a waiting download's record has them already)
            fs.sha256, fs.md5, fs.etag = d.sha256, d.md5, d.etag
            fs.downloaded_at = time.time()
        fs.status = plan.placed_status().value
        if old_path and old_path != target and not self.listed.owners([layout.fold(old_path)]):
            removals.append(old_path)
        summary.bytes_downloaded += d.size or 0
        summary.bytes_transferred += d.transferred
        summary.bytes_reused += d.reused
        status = plan.DONE_STATUS[d.action]
        return FileResult(d.id, Path(target), status, d.size, d.sha256)

    def _wait(self, d: Finished, fs: FileState) -> FileResult | None:
        """A finished download in a directory whose listing was incomplete: its name is
        not certain, so it stays in ``.ohpub/partial``, verified, and the state records
        its digests and the partial's size and mtime: the next run places it without a
        download (``plan.file_action`` -> PLACE)."""
        if d.action not in PLACEABLE or d.sha256 is None:
            self._failed(d, None, fs)
            return None
        fp = stat_fingerprint(partial_dir(self.dest) / str(d.id))
        if fp is None:  # (cannot happen: the worker just filled it)
            self._failed(d, None, fs)
            return None
        fs.size, fs.mtime_ns = fp
        if d.action is not Action.PLACE:
            fs.sha256, fs.md5, fs.etag = d.sha256, d.md5, d.etag
            fs.downloaded_at = time.time()
        return FileResult(d.id, None, FileStatus.WAITING, d.size, d.sha256)

    def _failed(self, d: Finished, target: str | None, fs: FileState) -> None:
        status = plan.DONE_STATUS[d.action] if d.action is not None else FileStatus.FAILED
        path = fs.path or target
        self.report(FileResult(d.id, Path(path) if path else None, status, d.size, None, d.error))
        fs.status = plan.failed_status(StateStatus(fs.status), status).value


def prune_dirs(dest: Path, relpath: str) -> None:
    """Remove directories a move or delete left empty (never DEST or .ohpub)."""
    LocalDest(dest).prune(relpath)


__all__ = ["Phase", "Committer", "FileResult", "record_of", "prune_dirs", "MOVING_DIR"]
