"""``verify`` (re-hash a mirror against its state) and ``status`` (what it holds, how
its runs went).

Both work on a mirror the user cannot write (another account's, a read-only mount):
they open the state database read-only. verify takes DEST's lock so it never races a
mirror that is still writing: exclusively when it can, and then it also records what it
found (``modified``, ``missing``) so the next mirror downloads those files again; on a
mirror it cannot write it holds the lock shared (a running mirror still makes it exit 3)
and only reports. status takes no lock; it probes the lock to show a running mirror.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ohpub import tree
from ohpub.errors import UsageError
from ohpub.hashing import hash_file
from ohpub.index_file import INDEX_NAME
from ohpub.records import StateStatus
from ohpub.state import (
    OHPUB_DIR,
    DestLock,
    FileState,
    LockHolder,
    RunInfo,
    StateDB,
    check_ohpub_dir,
    lock_holder,
    state_db_path,
)
from ohpub.units import human_bytes

_PLACED = ("present", "removed-upstream")
_FLAGGED = (StateStatus.MODIFIED.value, StateStatus.MISSING.value)
"""Statuses verify records; the files are still tracked at their path."""
_CHECKED = _PLACED + _FLAGGED


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
        new = rec["status"] if rec["status"] != "ok" else None
        if new is None and fs.status in _FLAGGED:
            new = StateStatus.PRESENT.value
        if new is not None and new != fs.status:
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
                    placed = {fs.id: fs for fs in batch if fs.path and fs.status in _CHECKED}
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


@dataclass
class Status:
    files: int
    bytes: int
    by_status: dict[str, int]
    by_project: dict[str, dict[str, int]]
    by_member: dict[str, dict[str, int]]
    last_run: dict[str, Any] | None
    last_complete_run: dict[str, Any] | None
    max_age: float | None
    stale: bool
    running: dict[str, Any] | None = None
    """The run holding DEST's lock right now (``command``, ``pid``), if any."""
    stale_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "by_status": self.by_status,
            "by_project": self.by_project,
            "by_member": self.by_member,
            "running": self.running,
            "last_run": self.last_run,
            "last_complete_run": self.last_complete_run,
            "max_age_seconds": self.max_age,
            "stale": self.stale,
            "stale_reason": self.stale_reason,
        }

    def render(self, fmt: str) -> str:
        if fmt == "json":
            return json.dumps(self.as_dict(), indent=2) + "\n"
        lines = [f"files: {self.files} ({human_bytes(self.bytes)})"]
        lines.append(
            "by status: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items()))
        )
        for title, groups in (("project", self.by_project), ("member", self.by_member)):
            for key, g in sorted(groups.items()):
                lines.append(f"{title} {key}: {g['files']} files, {human_bytes(g['bytes'])}")
        if self.running is not None:
            pid = self.running["pid"]
            lines.append(
                f"running: {self.running['command'] or 'ohpub'}"
                + (f" (pid {pid})" if pid is not None else "")
            )
        for title, run in (
            ("last run", self.last_run),
            ("last complete run", self.last_complete_run),
        ):
            if run is None:
                lines.append(f"{title}: none")
            else:
                lines.append(
                    f"{title}: {run['outcome'] or _unfinished(run)}, started {run['started_at']}"
                    + (f", ended {run['ended_at']}" if run["ended_at"] else "")
                )
        if self.max_age is not None:
            lines.append(f"STALE: {self.stale_reason}" if self.stale else "fresh")
        return "\n".join(lines) + "\n"


def _unfinished(run: dict[str, Any]) -> str:
    return "running" if run.get("running") else "did not finish"


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts else None


def _run_dict(run: RunInfo | None, running: bool = False) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.id,
        "command": run.command,
        "outcome": run.outcome,
        "complete": run.complete,
        "running": running,
        "started_at": _iso(run.started),
        "ended_at": _iso(run.ended),
        "counts": run.counts,
    }


def _staleness(
    state: StateDB, last: RunInfo | None, mirroring: bool, flagged: int, max_age: float
) -> str | None:
    """Why the mirror is not fresh, or None when it is.

    Fresh means: the most recent mirror run into DEST that is not still running ended
    with outcome ``ok`` (exit 0: its whole scope listed, every file present and
    verified) less than ``max_age`` ago, and no verify since found a file modified or
    missing. A failed, interrupted or killed run makes the mirror stale until a good run.
    """
    if last is not None and last.ended is None and mirroring:
        last = state.last_run(before=last.id)  # judge the last run that is over
    if last is None:
        return "no mirror run has finished"
    if last.ended is None:
        return "the last mirror run did not finish (killed or crashed)"
    if last.outcome != "ok" or not last.complete:
        return f"the last mirror run ended {last.outcome or 'badly'}, not ok"
    if flagged:
        return f"verify found {flagged} files modified or missing since"
    if time.time() - last.ended > max_age:
        return "the last good mirror run is older than --max-age"
    return None


def mirror_status(dest: Path, *, max_age: float | None) -> Status:
    """What DEST holds and how its runs went; reads only (the state opened read-only)."""
    holder: LockHolder | None = None
    with open_mirror(dest, readonly=True) as state:
        holder = lock_holder(dest)
        mirroring = holder is not None and holder.command in ("mirror", None)
        by_status, by_project, by_member = state.tally(_PLACED)
        last = state.last_run()
        complete = state.last_run(complete_only=True)
        reason = None
        if max_age is not None:
            flagged = sum(by_status.get(s, 0) for s in _FLAGGED)
            reason = _staleness(state, last, mirroring, flagged, max_age)
    last_running = mirroring and last is not None and last.ended is None
    return Status(
        files=sum(g["files"] for g in by_project.values()),
        bytes=sum(g["bytes"] for g in by_project.values()),
        by_status=by_status,
        by_project=by_project,
        by_member=by_member,
        last_run=_run_dict(last, last_running),
        last_complete_run=_run_dict(complete),
        max_age=max_age,
        stale=reason is not None,
        running=None if holder is None else {"command": holder.command, "pid": holder.pid},
        stale_reason=reason,
    )
