"""``status``: what a mirror holds and how its runs went, from the state alone (no file
is read, no lock taken; the lock is probed to show a running mirror).

One result type, ``MirrorStatus`` (``ohpub.status()`` returns it, ``ohpub status`` prints
it): ``to_dict()`` is the JSON of ``status --format json`` (times in ISO 8601, UTC), and
``text`` the same facts for a person (local times, ``2026-12-04 03:03 (2 h ago)``).

Counts are of every file the mirror holds at its path: placed ones (``present``,
``removed-upstream``) and those ``verify`` found ``modified`` (still there, with other
bytes; the next mirror fetches them again). "Last complete run" is the latest complete
mirror run of the mirror's whole scope: the scope of the latest run that no other run's
scope covers (a nightly unfiltered mirror, not a one-off ``--project 176`` into the same
DEST), or a run whose scope covers that one; its line says which scope that is.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ohpub.local.lock import LockHolder, lock_holder
from ohpub.local.state import RunInfo, StateDB
from ohpub.model.records import FileStatus, StateStatus
from ohpub.model.units import ago, human_bytes, human_duration, plural
from ohpub.ops.verify import FLAGGED, PLACED, open_mirror

HELD = (*PLACED, StateStatus.MODIFIED.value)
"""Statuses of files the mirror holds at their path (counted in files, bytes, groups)."""


def when(ts: float, now: float | None = None) -> str:
    """A moment for a person: local time to the minute and how long ago,
    ``2026-12-04 03:03 (2 h ago)``."""
    local = datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M")
    return f"{local} ({ago((now if now is not None else time.time()) - ts)})"


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts else None


@dataclass(frozen=True)
class Tally:
    """Files placed and their bytes (one project's, one member's)."""

    files: int
    bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes}


@dataclass(frozen=True)
class Running:
    """The run holding DEST's lock right now."""

    command: str | None
    pid: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "pid": self.pid}


@dataclass(frozen=True)
class RunRecord:
    """One mirror run as the state recorded it. ``outcome`` is ``ok``, ``failed`` or
    ``interrupted``, None while it runs or when it never finished (killed); ``error`` is
    what went wrong first in a failed run."""

    id: int
    command: str
    outcome: str | None
    complete: bool
    running: bool
    started: float
    ended: float | None
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    scope: str = "all public files"
    """The run's filters in words (``describe_scope``)."""

    @classmethod
    def of(cls, run: RunInfo, running: bool = False) -> RunRecord:
        """From the state's record (which keeps only the statuses that occurred): every
        status in ``counts``, zeros included, as in every ``counts`` of the API."""
        counts = {s.value: 0 for s in FileStatus} | dict(run.counts)
        return cls(
            run.id,
            run.command,
            run.outcome,
            run.complete,
            running,
            run.started,
            run.ended,
            counts,
            run.error,
            describe_scope(scope_of(run)),
        )

    @property
    def started_at(self) -> datetime:
        return datetime.fromtimestamp(self.started, timezone.utc)

    @property
    def ended_at(self) -> datetime | None:
        return datetime.fromtimestamp(self.ended, timezone.utc) if self.ended else None

    @property
    def state(self) -> str:
        """``ok``, ``failed``, ``interrupted``, ``running`` or ``did not finish``."""
        if self.outcome:
            return self.outcome
        return "running" if self.running else "did not finish"

    def describe(self, now: float) -> str:
        """``ok, ended 2026-12-04 03:17 (2 h ago) after 1.1 s``."""
        if self.ended is None:
            return f"{self.state}, started {when(self.started, now)}"
        took = human_duration(self.ended - self.started)
        return f"{self.state}, ended {when(self.ended, now)} after {took}"

    def __repr__(self) -> str:
        when_ = f"ended_at={_iso(self.ended)}" if self.ended else f"started_at={_iso(self.started)}"
        counts = {k: v for k, v in self.counts.items() if v}
        return f"RunRecord(id={self.id}, {self.state}, {when_}, counts={counts})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "command": self.command,
            "outcome": self.outcome,
            "complete": self.complete,
            "running": self.running,
            "started_at": _iso(self.started),
            "ended_at": _iso(self.ended),
            "counts": self.counts,
            "error": self.error,
            "scope": self.scope,
        }


@dataclass(frozen=True)
class MirrorStatus:
    """What a mirror holds and how its runs went (``ohpub status``). With ``max_age``,
    ``stale`` says the mirror is not fresh and ``stale_reason`` why (the README says
    exactly what fresh is)."""

    files: int
    bytes: int
    by_status: dict[str, int]
    by_project: dict[str, Tally]
    by_member: dict[str, Tally]
    running: Running | None
    """The run holding DEST's lock now, if any."""
    last_run: RunRecord | None
    last_complete_run: RunRecord | None
    max_age: float | None = None
    stale: bool = False
    stale_reason: str | None = None
    scope: str = "all public files"
    """The mirror's whole scope, in words (what ``last_complete_run`` is a run of)."""

    def to_dict(self) -> dict[str, Any]:
        """The fields of ``status --format json``."""
        return {
            "files": self.files,
            "bytes": self.bytes,
            "by_status": self.by_status,
            "by_project": {k: t.to_dict() for k, t in self.by_project.items()},
            "by_member": {k: t.to_dict() for k, t in self.by_member.items()},
            "running": self.running.to_dict() if self.running else None,
            "last_run": self.last_run.to_dict() if self.last_run else None,
            "last_complete_run": self.last_complete_run.to_dict()
            if self.last_complete_run
            else None,
            "scope": self.scope,
            "max_age_seconds": self.max_age,
            "stale": self.stale,
            "stale_reason": self.stale_reason,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @property
    def text(self) -> str:
        """What ``ohpub status`` prints: local times, words for a person."""
        now = time.time()
        lines = [f"files: {self.files} ({human_bytes(self.bytes)})"]
        lines.append(
            "by status: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items()))
        )
        for title, groups in (("project", self.by_project), ("member", self.by_member)):
            for key, g in sorted(groups.items()):
                lines.append(f"{title} {key}: {plural(g.files, 'file')}, {human_bytes(g.bytes)}")
        if self.running is not None:
            pid = self.running.pid
            lines.append(
                f"running: {self.running.command or 'ohpub'}"
                + (f" (pid {pid})" if pid is not None else "")
            )
        for title, run in (
            ("last run", self.last_run),
            (f"last complete run ({self.scope})", self.last_complete_run),
        ):
            lines.append(f"{title}: {run.describe(now) if run else 'none'}")
            if run is not None and run is self.last_run and run.outcome == "failed":
                lines.append(f"first error: {run.error or 'not recorded'}")
        if self.max_age is not None:
            lines.append(f"STALE: {self.stale_reason}" if self.stale else "fresh")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        last = self.last_run.state if self.last_run else None
        stale = f", stale={self.stale}" if self.max_age is not None else ""
        return f"MirrorStatus(files={self.files}, bytes={self.bytes}, last_run={last!r}{stale})"


# -- scopes ------------------------------------------------------------------------------------

_LISTS = ("projects", "users", "datatypes", "tags", "names")
_WORDS = {"projects": "project", "users": "user", "datatypes": "datatype", "tags": "tag"}


def scope_of(run: RunInfo) -> dict[str, Any]:
    """The filters of a run (``FileFilter.scope_key``, as the run log keeps it)."""
    raw = run.scope.get("scope") if isinstance(run.scope, dict) else None
    try:
        scope = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        scope = {}
    return scope if isinstance(scope, dict) else {}


def covers(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Does a listing of scope ``a`` list every file of scope ``b``? (Each filter of ``a``
    is absent, or ``b`` has it with no other values; dates no wider.)"""
    for key in _LISTS:
        mine, theirs = a.get(key) or [], b.get(key) or []
        if mine and (not theirs or not set(theirs) <= set(mine)):
            return False
    since_a, since_b = a.get("since"), b.get("since")
    if since_a and (not since_b or since_b < since_a):
        return False
    until_a, until_b = a.get("until"), b.get("until")
    return not (until_a and (not until_b or until_b > until_a))


def describe_scope(scope: dict[str, Any]) -> str:
    """``all public files``, or ``project 176, 128; tag spotify``."""
    parts = []
    for key in _LISTS:
        values = scope.get(key) or []
        if values:
            parts.append(f"{_WORDS.get(key, 'name')} " + ", ".join(str(v) for v in values))
    for key in ("since", "until"):
        if scope.get(key):
            parts.append(f"{key} {scope[key]}")
    return "; ".join(parts) or "all public files"


def whole_scope(runs: list[RunInfo]) -> dict[str, Any]:
    """The mirror's scope: that of the most recent run no other run's scope strictly
    covers (``runs`` most recent first)."""
    scopes = [scope_of(r) for r in runs]
    for s in scopes:
        if not any(covers(o, s) and not covers(s, o) for o in scopes):
            return s
    return {}


def last_complete(runs: list[RunInfo], scope: dict[str, Any]) -> RunInfo | None:
    """The latest complete run whose scope covers ``scope``."""
    return next((r for r in runs if r.complete and covers(scope_of(r), scope)), None)


def _staleness(
    state: StateDB,
    last: RunInfo | None,
    mirroring: bool,
    flagged: int,
    max_age: float,
    now: float,
) -> str | None:
    """Why the mirror is not fresh (a whole sentence, its reason included), or None.

    Fresh means: the most recent mirror run into DEST that is not still running ended
    with outcome ``ok`` (exit 0: its whole scope listed, every file present and
    verified) less than ``max_age`` ago, and no verify since found a file modified or
    missing. A failed, interrupted or killed run makes the mirror stale until a good run.
    """
    if last is not None and last.ended is None and mirroring:
        last = state.last_run(before=last.id)  # judge the last run that is over
    if last is None:
        return "no mirror run into this DEST has finished yet"
    if last.ended is None:
        return (
            f"the last mirror run, started {when(last.started, now)}, did not finish: "
            "it was killed or crashed before it could record its end"
        )
    ended = when(last.ended, now)
    if last.outcome == "interrupted":
        return f"the last mirror run was interrupted (Ctrl-C or SIGTERM); it ended {ended}"
    if last.outcome != "ok":
        why = last.error or "its first error was not recorded"
        return f"the last mirror run failed; it ended {ended}; first error: {why}"
    if not last.complete:
        return f"the last mirror run, ended {ended}, did not list its whole scope"
    if flagged:
        return (
            f"verify found {plural(flagged, 'file')} modified or missing since the last "
            f"mirror run (ended {ended}); the next mirror downloads them again"
        )
    if now - last.ended > max_age:
        return (
            f"the last good mirror run ended {ended}, longer ago than the maximum age "
            f"of {human_duration(max_age)}"
        )
    return None


def mirror_status(dest: Path, *, max_age: float | None) -> MirrorStatus:
    """What DEST holds and how its runs went; reads only (the state opened read-only)."""
    holder: LockHolder | None = None
    now = time.time()
    with open_mirror(dest, readonly=True) as state:
        holder = lock_holder(dest)
        mirroring = holder is not None and holder.command in ("mirror", None)
        by_status, by_project, by_member = state.tally(HELD)
        last = state.last_run()
        runs = state.runs("mirror")
        scope = whole_scope(runs)
        complete = last_complete(runs, scope)
        reason = None
        if max_age is not None:
            flagged = sum(by_status.get(s, 0) for s in FLAGGED)
            reason = _staleness(state, last, mirroring, flagged, max_age, now)
    last_running = mirroring and last is not None and last.ended is None
    return MirrorStatus(
        files=sum(g["files"] for g in by_project.values()),
        bytes=sum(g["bytes"] for g in by_project.values()),
        by_status=by_status,
        by_project={k: Tally(g["files"], g["bytes"]) for k, g in by_project.items()},
        by_member={k: Tally(g["files"], g["bytes"]) for k, g in by_member.items()},
        running=None if holder is None else Running(holder.command, holder.pid),
        last_run=RunRecord.of(last, last_running) if last else None,
        last_complete_run=RunRecord.of(complete) if complete else None,
        max_age=max_age,
        stale=reason is not None,
        stale_reason=reason,
        scope=describe_scope(scope),
    )


__all__ = ["MirrorStatus", "RunRecord", "Running", "Tally", "mirror_status", "when"]
