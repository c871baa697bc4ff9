"""``verify`` (re-hash a mirror against its state) and ``status`` (what it holds, how
its runs went). Both only read: verify takes DEST's lock so it never races a mirror
that is still writing; status does not, so monitoring works while a mirror runs."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ohpub.errors import EXIT_FAILURE, EXIT_OK, UsageError
from ohpub.hashing import hash_file
from ohpub.index_file import INDEX_NAME
from ohpub.state import OHPUB_DIR, DestLock, FileState, StateDB, stat_fingerprint, state_db_path
from ohpub.units import human_bytes

_PLACED = ("present", "removed-upstream")


def open_mirror(dest: Path) -> StateDB:
    """The state of an existing mirror; a path that is not one is the user's mistake."""
    if not dest.is_dir():
        raise UsageError(f"{dest} is not a directory")
    if not state_db_path(dest).exists():
        raise UsageError(
            f"{dest} is not an ohpub mirror (no {OHPUB_DIR}/state.sqlite3)",
            hint="run 'ohpub mirror' into it first",
        )
    return StateDB.open(dest, create=False)


@dataclass
class VerifyReport:
    counts: Counter[str] = field(default_factory=Counter)
    bytes: int = 0

    @property
    def exit_code(self) -> int:
        bad = self.counts["modified"] + self.counts["missing"]
        return EXIT_FAILURE if bad else EXIT_OK

    def summary(self) -> str:
        c = self.counts
        return (
            f"verified {c['ok'] + c['modified'] + c['missing']} files: {c['ok']} ok, "
            f"{c['modified']} modified, {c['missing']} missing, {c['untracked']} untracked"
        )


def _check(dest: Path, fs: FileState) -> dict[str, Any]:
    assert fs.path is not None
    rec: dict[str, Any] = {"id": fs.id, "path": fs.path, "expected_sha256": fs.sha256}
    path = dest / fs.path
    if stat_fingerprint(path) is None:
        return {**rec, "status": "missing", "bytes": None, "sha256": None}
    digest = hash_file(path)
    status = "ok" if digest.sha256 == fs.sha256 and digest.size == fs.size else "modified"
    return {**rec, "status": status, "bytes": digest.size, "sha256": digest.sha256}


def verify_mirror(dest: Path, on_record: Callable[[dict[str, Any]], None]) -> VerifyReport:
    """Re-hash every placed file (a few at a time: hashlib releases the GIL)."""
    report = VerifyReport()
    with open_mirror(dest) as state, DestLock(dest):
        placed = [fs for fs in state.all() if fs.path and fs.status in _PLACED]
        tracked = {fs.path for fs in state.all() if fs.path}
        with ThreadPoolExecutor(max_workers=4) as pool:
            for rec in pool.map(lambda fs: _check(dest, fs), placed):
                report.counts[rec["status"]] += 1
                report.bytes += rec["bytes"] or 0
                on_record(rec)
        for rel in _walk(dest):
            if rel not in tracked:
                report.counts["untracked"] += 1
                on_record({"id": None, "path": rel, "status": "untracked"})
    return report


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

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURE if self.stale else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "by_status": self.by_status,
            "by_project": self.by_project,
            "by_member": self.by_member,
            "last_run": self.last_run,
            "last_complete_run": self.last_complete_run,
            "max_age_seconds": self.max_age,
            "stale": self.stale,
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
        for title, run in (
            ("last run", self.last_run),
            ("last complete run", self.last_complete_run),
        ):
            if run is None:
                lines.append(f"{title}: none")
            else:
                lines.append(
                    f"{title}: {run['outcome'] or 'did not finish'}, started {run['started_at']}"
                    + (f", ended {run['ended_at']}" if run["ended_at"] else "")
                )
        if self.max_age is not None:
            lines.append(
                "STALE: last complete run is older than --max-age" if self.stale else "fresh"
            )
        return "\n".join(lines) + "\n"


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts else None


def mirror_status(dest: Path, *, max_age: float | None) -> Status:
    with open_mirror(dest) as state:
        files = state.all()
        last = state.last_run()
        complete = state.last_run(complete_only=True)
    placed = [fs for fs in files if fs.path and fs.status in _PLACED]
    by_project: dict[str, dict[str, int]] = {}
    by_member: dict[str, dict[str, int]] = {}
    for fs in placed:
        for groups, key in (
            (by_project, str(fs.project_id)),
            (by_member, fs.username or "(hidden)"),
        ):
            g = groups.setdefault(key, {"files": 0, "bytes": 0})
            g["files"] += 1
            g["bytes"] += fs.size or 0

    def run_dict(run: Any) -> dict[str, Any] | None:
        if run is None:
            return None
        return {
            "id": run.id,
            "command": run.command,
            "outcome": run.outcome,
            "complete": run.complete,
            "started_at": _iso(run.started),
            "ended_at": _iso(run.ended),
            "counts": run.counts,
        }

    stale = False
    if max_age is not None:
        stale = complete is None or complete.ended is None or time.time() - complete.ended > max_age
    return Status(
        files=len(placed),
        bytes=sum(fs.size or 0 for fs in placed),
        by_status=dict(Counter(fs.status for fs in files)),
        by_project=by_project,
        by_member=by_member,
        last_run=run_dict(last),
        last_complete_run=run_dict(complete),
        max_age=max_age,
        stale=stale,
    )
