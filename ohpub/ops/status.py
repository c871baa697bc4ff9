"""``status``: what a mirror holds and how its runs went, from the state alone (no file
is read, no lock taken; the lock is probed to show a running mirror).

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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ohpub.local.lock import LockHolder, lock_holder
from ohpub.local.state import RunInfo, StateDB
from ohpub.model.records import StateStatus
from ohpub.model.units import human_bytes
from ohpub.ops.verify import FLAGGED, PLACED, open_mirror

HELD = (*PLACED, StateStatus.MODIFIED.value)
"""Statuses of files the mirror holds at their path (counted in files, bytes, groups)."""


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
    scope: str = "all public files"
    """The mirror's whole scope, in words (what "last complete run" is a run of)."""

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
            "scope": self.scope,
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
            (f"last complete run ({self.scope})", self.last_complete_run),
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
        "scope": describe_scope(scope_of(run)),
    }


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
    """``all public files``, or ``project 176, 128; tag spotify`` (ISO dates compare)."""
    parts = []
    for key in _LISTS:
        values = scope.get(key) or []
        if values:
            word = _WORDS.get(key, "name")
            parts.append(f"{word} " + ", ".join(str(v) for v in values))
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
        by_status, by_project, by_member = state.tally(HELD)
        last = state.last_run()
        runs = state.runs("mirror")
        scope = whole_scope(runs)
        complete = last_complete(runs, scope)
        reason = None
        if max_age is not None:
            flagged = sum(by_status.get(s, 0) for s in FLAGGED)
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
        scope=describe_scope(scope),
    )
