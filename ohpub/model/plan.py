"""The plan: what a mirror run does with each file, decided once, from facts, with no I/O.

Inputs are the listing record's state (``Tracked``, what the state database says), the
facts read from disk (``Disk``: the stat fingerprint at the tracked path, and whether a
resumable partial exists) and the options. Outputs are ``Action`` values. The dry run
prints this plan; the real run executes the same plan: both call these functions, so
they can never disagree about a file.

A file moves through at most two decisions:

1. ``file_action`` while the listing streams in: KEEP, REHASH, DOWNLOAD, RESUME, or PLACE
   (a verified download an earlier run kept waiting, because the listing of its
   directory was incomplete).
2. After a REHASH (the bytes are read, sha256 only): ``after_rehash`` gives KEEP or
   DOWNLOAD. After the complete listing fixes every file's path (``layout``), a KEEP whose
   path changed becomes a RENAME (``placed_action``).

Files the complete listing no longer has get MARK_REMOVED or DELETE
(``removal_action``, guarded by ``shrink_refusal``). Whether a file to download is SKIP
(over ``--max-size``) or UNAVAILABLE is a fact only storage can tell: the real run learns
it from the transfer, the dry run from a one-byte probe, and both map it the same way
(``transfer_action``).

The state record's status (``StateStatus``) changes only here, too: what a listing, a
placement, a failure, a removal or ``verify`` makes of it (``*_status`` below). The rooms
that write the state (``mirror.work``, ``mirror.commit``, ``mirror.removals``,
``ops.verify``) ask these functions and store the answer. The plan lives in the model
layer, below the mirror and ``ops``, because both use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ohpub.model.records import Action, FileStatus, StateStatus

PLACED = frozenset({StateStatus.PRESENT, StateStatus.REMOVED_UPSTREAM})
"""States in which a file sits at its tracked path, verified when it was placed."""
FLAGGED = frozenset({StateStatus.MODIFIED, StateStatus.MISSING})
"""States ``verify`` records: still tracked at its path, to be downloaded again."""

SHRINK_MIN = 10
"""--delete refuses when it would remove more than this many files AND more than half of
the files in scope: a listing that shrank that much is more likely an upstream hiccup."""


@dataclass(frozen=True)
class Tracked:
    """The part of a state record the plan needs."""

    id: int
    path: str | None
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    status: StateStatus


@dataclass(frozen=True)
class Disk:
    """Facts read from disk for one file, before anything is decided."""

    fingerprint: tuple[int, int] | None
    """(size, mtime_ns) of the regular file at the tracked path; None when absent."""
    partial: bool = False
    """A partial download that can be resumed (bytes plus the sidecar naming its ETag)."""
    waiting: bool = False
    """The partial is a finished, verified download that an earlier run kept waiting (its
    size and mtime are what the state recorded then)."""


def file_action(tracked: Tracked | None, disk: Disk, *, checksum: bool = False) -> Action:
    """The first decision for a listed file.

    A file is trusted without reading it only when the state says it was placed and
    verified, and its size and mtime are what they were then. ``checksum`` (``mirror
    --checksum``) re-hashes every placed file whatever its fingerprint says.
    ``verify``'s findings (MODIFIED, MISSING) are not placed states: they download again.
    A file an earlier run downloaded and kept waiting is placed without a request.
    """
    if disk.waiting and (tracked is None or tracked.path is None):
        return Action.PLACE
    if (
        tracked is None
        or tracked.path is None
        or tracked.status not in PLACED
        or disk.fingerprint is None
    ):
        return Action.RESUME if disk.partial else Action.DOWNLOAD
    if checksum or disk.fingerprint != (tracked.size, tracked.mtime_ns):
        return Action.REHASH
    return Action.KEEP


def after_rehash(tracked: Tracked, sha256: str, size: int) -> Action:
    """A re-hashed file is kept when its bytes are the ones placed, else downloaded."""
    if sha256 == tracked.sha256 and size == tracked.size:
        return Action.KEEP
    return Action.DOWNLOAD


def placed_action(action: Action, path: str | None, target: str | None) -> Action:
    """A kept file whose path the layout changed (a newer file took its plain name) moves."""
    if action is Action.KEEP and path is not None and target is not None and path != target:
        return Action.RENAME
    return action


def removal_action(*, delete: bool, refused: bool) -> Action:
    """A file the complete listing of its scope no longer has: kept and marked, or deleted."""
    return Action.DELETE if delete and not refused else Action.MARK_REMOVED


def shrink_refusal(gone: int, in_scope: int, *, delete: bool) -> str | None:
    """Why --delete must not act on this listing, or None when it may."""
    if delete and gone > SHRINK_MIN and gone * 2 > in_scope:
        return (
            f"--delete refused: the listing would remove {gone} of {in_scope} files "
            "in scope, which looks like an upstream hiccup; files kept"
        )
    return None


def transfer_action(size: int | None, max_size: int | None) -> Action | None:
    """What the size storage announced turns a download into: SKIP (over ``--max-size``,
    the same rule the transfer applies when it raises TooLargeError), or None (go on).
    A storage that refuses the object makes it UNAVAILABLE in both runs."""
    if max_size is not None and size is not None and size > max_size:
        return Action.SKIP
    return None


def waiting_partial(tracked: Tracked | None, fingerprint: tuple[int, int] | None) -> bool:
    """Is the partial (its ``fingerprint``) the verified download the state recorded for a
    file that waits to be placed (no path yet, a sha256, the same size and mtime)?"""
    return (
        tracked is not None
        and tracked.path is None
        and tracked.sha256 is not None
        and fingerprint is not None
        and fingerprint == (tracked.size, tracked.mtime_ns)
    )


# -- the state record's status ----------------------------------------------------------------

NEW_STATUS = StateStatus.PENDING
"""A file first seen in a listing: tracked, not yet placed."""


def relisted_status(status: StateStatus, *, has_path: bool) -> StateStatus:
    """A file listed again: one marked removed-upstream is back (present when it is still
    at its path, else pending); every other status stands."""
    if status is StateStatus.REMOVED_UPSTREAM:
        return StateStatus.PRESENT if has_path else StateStatus.PENDING
    return status


def placed_status() -> StateStatus:
    """A file placed from a verified download, or whose re-hash confirmed its bytes."""
    return StateStatus.PRESENT


def failed_status(status: StateStatus, outcome: FileStatus) -> StateStatus:
    """A transfer that did not place the file: a placed file stays present (its bytes are
    still the verified ones); otherwise unavailable, pending again (skipped over
    ``--max-size``), or failed."""
    if status is StateStatus.PRESENT:
        return status
    if outcome is FileStatus.UNAVAILABLE:
        return StateStatus.UNAVAILABLE
    if outcome is FileStatus.SKIPPED:
        return StateStatus.PENDING
    return StateStatus.FAILED


def removed_status(status: StateStatus, *, has_path: bool) -> StateStatus:
    """A file the complete listing of its scope no longer has, kept (no ``--delete``): a
    placed one is removed-upstream, one that never was placed is unavailable."""
    if status is StateStatus.REMOVED_UPSTREAM:
        return status
    if has_path and status in PLACED:
        return StateStatus.REMOVED_UPSTREAM
    return StateStatus.UNAVAILABLE


def verified_status(status: StateStatus, finding: str) -> StateStatus:
    """What ``verify`` records: ``modified`` or ``missing`` as found (the next mirror
    downloads the file again), and a flagged file found intact again is present."""
    if finding in (StateStatus.MODIFIED.value, StateStatus.MISSING.value):
        return StateStatus(finding)
    if finding == "ok" and status in FLAGGED:
        return StateStatus.PRESENT
    return status


def partial_is_stale(in_scope: bool, listed: bool, *, complete: bool) -> bool:
    """A partial download may be removed only when its file is in this run's scope, the
    listing of that scope was complete, and it no longer lists the file: another scope's
    partials are that scope's business (they resume when it runs)."""
    return complete and in_scope and not listed


DRY_STATUS: dict[Action, FileStatus] = {
    Action.DOWNLOAD: FileStatus.PLANNED,
    Action.RESUME: FileStatus.PLANNED,
    Action.PLACE: FileStatus.PLANNED,
    Action.KEEP: FileStatus.UNCHANGED,
    Action.RENAME: FileStatus.RENAMED,
    Action.MARK_REMOVED: FileStatus.REMOVED_UPSTREAM,
    Action.DELETE: FileStatus.DELETED,
    Action.SKIP: FileStatus.SKIPPED,
    Action.UNAVAILABLE: FileStatus.UNAVAILABLE,
}
"""How the dry run reports each final action (a REHASH is always resolved first)."""

DONE_STATUS: dict[Action, FileStatus] = {
    **DRY_STATUS,
    Action.DOWNLOAD: FileStatus.DOWNLOADED,
    Action.RESUME: FileStatus.RESUMED,
    Action.PLACE: FileStatus.DOWNLOADED,
}
"""How the real run reports each action it carried out (FAILED aside)."""


__all__ = [
    "PLACED",
    "FLAGGED",
    "SHRINK_MIN",
    "Tracked",
    "Disk",
    "file_action",
    "after_rehash",
    "placed_action",
    "removal_action",
    "shrink_refusal",
    "transfer_action",
    "partial_is_stale",
    "waiting_partial",
    "NEW_STATUS",
    "relisted_status",
    "placed_status",
    "failed_status",
    "removed_status",
    "verified_status",
    "DRY_STATUS",
    "DONE_STATUS",
]
