"""``verify``: re-hash a mirror against its state, and open an existing mirror for it
and for ``status``.

Both work on a mirror the user cannot write (another account's, a read-only mount):
they open the state database read-only. verify takes DEST's lock so it never races a
mirror that is still writing: exclusively when it can, and then it also records what it
found (``modified``, ``missing``) so the next mirror downloads those files again; on a
mirror it cannot write it holds the lock shared (a running mirror still makes it exit 3)
and only reports. status takes no lock; it probes the lock to show a running mirror.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ohpub.local import tree
from ohpub.local.index import INDEX_NAME
from ohpub.local.lock import DestLock
from ohpub.local.state import OHPUB_DIR, FileState, StateDB, check_ohpub_dir, state_db_path
from ohpub.model import plan
from ohpub.model.errors import UsageError
from ohpub.model.hashing import hash_file
from ohpub.model.records import StateStatus

PLACED = tuple(sorted(s.value for s in plan.PLACED))
FLAGGED = tuple(sorted(s.value for s in plan.FLAGGED))
"""Statuses verify records; the files are still tracked at their path."""
CHECKED = PLACED + FLAGGED


def open_mirror(dest: Path, *, readonly: bool = True) -> StateDB:
    """The state of an existing mirror; a path that is not one is the user's mistake."""
    require_mirror(dest)
    return StateDB.open(dest, create=False, readonly=readonly)


def require_mirror(dest: Path) -> None:
    """Refuse (UsageError) a DEST that is not an ohpub mirror, before touching it."""
    if not dest.is_dir():
        raise UsageError(f"{dest} is not a directory")
    check_ohpub_dir(dest)
    if not state_db_path(dest).exists():
        raise UsageError(
            f"{dest} is not an ohpub mirror (no {OHPUB_DIR}/state.sqlite3)",
            hint="run 'ohpub mirror' into it first",
        )


def _can_write(dest: Path) -> bool:
    db = state_db_path(dest)
    return os.access(db, os.W_OK) and os.access(db.parent, os.W_OK | os.X_OK)


@dataclass
class VerifyReport:
    counts: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    recorded: bool = False
    """True when the findings were stored in the state (verify could write there), so the
    next mirror downloads modified and missing files again; False on read-only use."""

    @property
    def ok(self) -> bool:
        """Every tracked file is present with its bytes (untracked files do not count)."""
        return not (self.counts["modified"] or self.counts["missing"])

    def summary(self) -> str:
        c = self.counts
        return (
            f"verified {c['ok'] + c['modified'] + c['missing']} files: {c['ok']} ok, "
            f"{c['modified']} modified, {c['missing']} missing, {c['untracked']} untracked"
        )


def _check(dest: Path, fs: FileState) -> dict[str, Any]:
    assert fs.path is not None
    rec: dict[str, Any] = {"id": fs.id, "path": fs.path, "expected_sha256": fs.sha256}
    try:  # lstat with no symlink followed on the way: a planted link is not our file
        st = tree.lstat_within(dest, fs.path)
    except (tree.DiskError, UsageError):
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        return {**rec, "status": "missing", "bytes": None, "sha256": None}
    digest = hash_file(dest / fs.path)
    ok = digest.sha256 == fs.sha256 and digest.size == fs.size
    status = "ok" if ok else "modified"
    return {**rec, "status": status, "bytes": digest.size, "sha256": digest.sha256}


def _record(state: StateDB, files: dict[int, FileState], recs: list[dict[str, Any]]) -> None:
    """Store what verify found, so the next mirror downloads modified and missing files
    again; a flagged file found intact again is ``present`` once more."""
    changed = []
    for rec in recs:
        fs = files[rec["id"]]
        new = plan.verified_status(StateStatus(fs.status), rec["status"]).value
        if new != fs.status:
            fs.status = new
            changed.append(fs)
    state.put_many(changed)


def verify_mirror(dest: Path, on_record: Callable[[dict[str, Any]], None]) -> VerifyReport:
    """Re-hash every tracked file (a few at a time: hashlib releases the GIL).

    The findings are recorded in the state when this run holds the lock exclusively and
    may write the database; otherwise (read-only use) they are only reported.
    """
    report = VerifyReport()
    require_mirror(dest)
    with DestLock(dest, command="verify", read_only_ok=True) as lock:
        writable = lock.exclusive and _can_write(dest)
        with open_mirror(dest, readonly=not writable) as state:
            tracked: set[str] = set()
            with ThreadPoolExecutor(max_workers=4) as pool:
                for batch in _batches(state.iter_all(), 1000):
                    tracked.update(fs.path for fs in batch if fs.path)
                    placed = {fs.id: fs for fs in batch if fs.path and fs.status in CHECKED}
                    recs = list(pool.map(lambda fs: _check(dest, fs), placed.values()))
                    for rec in recs:
                        report.counts[rec["status"]] += 1
                        report.bytes += rec["bytes"] or 0
                        on_record(rec)
                    if writable:
                        _record(state, placed, recs)
            report.recorded = writable
        for rel in _walk(dest):
            if rel not in tracked:
                report.counts["untracked"] += 1
                on_record({"id": None, "path": rel, "status": "untracked"})
    return report


def _batches(items: Iterator[FileState], n: int) -> Iterator[list[FileState]]:
    """Records a batch at a time: a mirror of 100,000 files is verified without holding
    100,000 records (only the set of tracked paths, for the untracked check)."""
    batch: list[FileState] = []
    for fs in items:
        batch.append(fs)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _walk(dest: Path) -> Iterator[str]:
    """Every file under DEST but ohpub's own (``.ohpub/``, ``index.jsonl``), never
    following symlinks."""
    for root, dirs, files in os.walk(dest, followlinks=False):
        rel_root = os.path.relpath(root, dest)
        if rel_root == ".":
            dirs[:] = [d for d in dirs if d != OHPUB_DIR]
            files = [f for f in files if f != INDEX_NAME]
        dirs.sort()
        for name in sorted(files):
            yield name if rel_root == "." else f"{rel_root}/{name}".replace(os.sep, "/")


