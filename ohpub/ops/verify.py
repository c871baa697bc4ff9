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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ohpub.local import tree
from ohpub.local.dest import LocalDest
from ohpub.local.lock import DestLock
from ohpub.local.state import OHPUB_DIR, FileState, StateDB, check_ohpub_dir, state_db_path
from ohpub.model import plan
from ohpub.model.errors import UsageError
from ohpub.model.hashing import hash_file
from ohpub.model.records import StateStatus
from ohpub.model.units import plural

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
    if not dest.exists():
        raise UsageError(f"{dest} does not exist")
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


@dataclass(frozen=True)
class VerifyRecord:
    """One file of ``verify``: ``ok``, ``modified`` or ``missing`` (a tracked file), or
    ``untracked`` (a file in DEST that ohpub did not place; ``id`` is None). ``path`` is
    relative to DEST."""

    id: int | None
    path: Path
    status: str
    bytes: int | None = None
    sha256: str | None = None
    expected_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record of ``verify --format jsonl``."""
        rec: dict[str, Any] = {"id": self.id, "path": self.path.as_posix(), "status": self.status}
        if self.status != "untracked":
            rec.update(
                bytes=self.bytes, sha256=self.sha256, expected_sha256=self.expected_sha256
            )
        return rec


VERIFY_STATUSES = ("ok", "modified", "missing", "untracked")


@dataclass
class VerifyResult:
    """How ``verify`` went: ``ok`` when every tracked file is present with its bytes
    (untracked files do not count). ``counts`` has every status of ``VERIFY_STATUSES``;
    ``files`` the records (empty when the caller did not keep them); ``recorded`` is True
    when the findings were stored in the state (verify could write there), so the next
    mirror downloads modified and missing files again."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERIFY_STATUSES, 0))
    files: list[VerifyRecord] = field(default_factory=list, repr=False)
    bytes: int = 0
    recorded: bool = False

    @property
    def ok(self) -> bool:
        return not (self.counts["modified"] or self.counts["missing"])

    def emitter(
        self, on_record: Callable[[VerifyRecord], None], *, keep: bool
    ) -> Callable[[VerifyRecord], None]:
        """What a verify calls with each record: counted here (and kept, with ``keep``),
        then handed to ``on_record``."""

        def emit(rec: VerifyRecord) -> None:
            self.counts[rec.status] += 1
            if keep:
                self.files.append(rec)
            on_record(rec)

        return emit

    def summary(self) -> str:
        """``verified 31 files: 31 ok, 0 modified, 0 missing, 1 untracked``."""
        c = self.counts
        n = c["ok"] + c["modified"] + c["missing"]
        return (
            f"verified {plural(n, 'file')}: {c['ok']} ok, "
            f"{c['modified']} modified, {c['missing']} missing, {c['untracked']} untracked"
        )

    def __repr__(self) -> str:
        shown = f"{len(self.files)} records" if self.files else "not kept"
        return f"VerifyResult(ok={self.ok}, counts={self.counts}, files=<{shown}>)"


def _check(dest: Path, fs: FileState) -> VerifyRecord:
    assert fs.path is not None
    path = Path(fs.path)
    try:  # lstat with no symlink followed on the way: a planted link is not our file
        st = tree.lstat_within(dest, fs.path)
    except (tree.DiskError, UsageError):
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        return VerifyRecord(fs.id, path, "missing", expected_sha256=fs.sha256)
    digest = hash_file(dest / fs.path)
    ok = digest.sha256 == fs.sha256 and digest.size == fs.size
    status = "ok" if ok else "modified"
    return VerifyRecord(fs.id, path, status, digest.size, digest.sha256, fs.sha256)


def _record(state: StateDB, files: dict[int, FileState], recs: list[VerifyRecord]) -> None:
    """Store what verify found, so the next mirror downloads modified and missing files
    again; a flagged file found intact again is ``present`` once more."""
    changed = []
    for rec in recs:
        assert rec.id is not None
        fs = files[rec.id]
        new = plan.verified_status(StateStatus(fs.status), rec.status).value
        if new != fs.status:
            fs.status = new
            changed.append(fs)
    state.put_many(changed)


def verify_mirror(
    dest: Path, on_record: Callable[[VerifyRecord], None], *, keep: bool = False
) -> VerifyResult:
    """Re-hash every tracked file (a few at a time: hashlib releases the GIL); with
    ``keep``, the result holds every record too.

    The findings are recorded in the state when this run holds the lock exclusively and
    may write the database; otherwise (read-only use) they are only reported.
    """
    report = VerifyResult()
    emit = report.emitter(on_record, keep=keep)
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
                        report.bytes += rec.bytes or 0
                        emit(rec)
                    if writable:
                        _record(state, placed, recs)
            report.recorded = writable
        for rel in LocalDest(dest).walk():
            if rel not in tracked:
                emit(VerifyRecord(None, Path(rel), "untracked"))
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


