"""The types the rooms of a mirror run share: what a run is asked (``MirrorOptions``), how
it went (``MirrorSummary``, ``FileResult``), what it tells its watcher (``Events``), and
what passes between the run and its workers (``WorkItem``, ``Finished``).
They live here, below every room that uses them, so that no room imports the run."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ohpub.local.dest import Destination, LocalDest
from ohpub.model import plan
from ohpub.model.errors import UsageError
from ohpub.model.filters import FileFilter
from ohpub.model.records import Action, DataFile, FileStatus

log = logging.getLogger("ohpub")


@dataclass
class MirrorOptions:
    """What one mirror run is asked to do (the CLI's options, or ``ohpub.mirror``'s)."""

    dest: Path
    flt: FileFilter = field(default_factory=FileFilter)
    jobs: int = 8
    dry_run: bool = False
    delete: bool = False
    max_size: int | None = None
    strict: bool = False
    checksum: bool = False
    """Re-hash every placed file, whatever its size and mtime say (``--checksum``)."""
    url: str | None = None
    """An object-store DEST (``s3://bucket/prefix``); ``dest`` is then its local work
    directory (state, partials)."""
    destination: Destination | None = field(default=None, repr=False, compare=False)
    """Where files are placed; a ``LocalDest`` of ``dest`` unless set (the bucket's, by
    ``Mirror.run``)."""

    def __post_init__(self) -> None:
        self.dest = Path(os.fspath(self.dest))
        if self.destination is None:
            self.destination = LocalDest(self.dest)
        if self.jobs < 1:
            raise UsageError(f"jobs must be at least 1, not {self.jobs}")


@dataclass
class MirrorSummary:
    """How a run went: counts by status, bytes, and whether it may exit 0."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FileStatus, 0))
    bytes_downloaded: int = 0
    bytes_transferred: int = 0
    """Bytes this run fetched for the files it placed (a resumed file's earlier bytes not
    included, bytes fetched twice after a restart counted twice)."""
    bytes_reused: int = 0
    """Bytes of the placed files that earlier runs had fetched (resumed partials)."""
    bytes_planned: int = 0
    elapsed: float = 0.0
    listing_complete: bool = False
    warnings: list[str] = field(default_factory=list)
    first_error: str | None = None
    """What went wrong first (a failed file, a listing cut short), for ``status``."""
    ok: bool = True
    """Every file in scope present and verified (unavailable ones excepted unless
    ``strict``), the listing complete, nothing refused: the CLI's exit 0."""

    @property
    def files(self) -> int:
        """Files in scope (deleted ones are no longer files of the mirror)."""
        return sum(n for s, n in self.counts.items() if s != FileStatus.DELETED)


class Events(Protocol):
    """What the mirror tells its watcher (progress bars, jsonl writer)."""

    def listed(self, n: int) -> None: ...
    def expected(self, n: int) -> None: ...
    def listing_done(self, n: int) -> None: ...
    def kept(self, n: int) -> None: ...
    def started(self, f: DataFile) -> None: ...
    def sized(self, nbytes: int) -> None: ...
    def progress(self, nbytes: int) -> None: ...
    def reused(self, nbytes: int) -> None: ...
    def finished(self, f: DataFile) -> None: ...
    def result(self, r: FileResult) -> None: ...
    def warning(self, message: str) -> None: ...


class NullEvents:
    """A watcher that ignores everything but warnings (logged)."""

    def listed(self, n: int) -> None:
        """``n`` files listed so far."""

    def expected(self, n: int) -> None:
        """The listing's own count of files in scope, once known (before all are listed)."""

    def listing_done(self, n: int) -> None:
        """The listing ended with ``n`` files (complete or not)."""

    def kept(self, n: int) -> None:
        """``n`` more listed files need no transfer: their bytes are in place (each is
        reported as ``unchanged`` or ``renamed`` once the paths are settled)."""

    def started(self, f: DataFile) -> None:
        """A transfer of ``f`` began."""

    def sized(self, nbytes: int) -> None:
        """A transfer learned its file's size from storage (the API has none)."""

    def progress(self, nbytes: int) -> None:
        """``nbytes`` more bytes arrived (negative when a transfer restarts)."""

    def reused(self, nbytes: int) -> None:
        """``nbytes`` of a file were already on disk from an earlier run (a resumed
        partial; ``progress`` does not count them); negative when a restart drops them."""

    def finished(self, f: DataFile) -> None:
        """The transfer of ``f`` ended (well or not)."""

    def result(self, r: FileResult) -> None:
        """One file's final record."""

    def warning(self, message: str) -> None:
        log.warning(message)


@dataclass
class FileResult:
    """One file of a mirror run (a line of ``mirror --format jsonl``): ``path`` is where it
    is, relative to DEST (``dest / r.path``); None for a listing record without one."""

    id: int | None
    path: Path | None
    status: FileStatus
    bytes: int | None = None
    sha256: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The jsonl record (``path`` as a ``/``-separated string)."""
        return {
            "id": self.id,
            "path": self.path.as_posix() if self.path is not None else None,
            "status": self.status.value,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "error": self.error,
        }

    to_dict = as_dict


@dataclass
class WorkItem:
    """One file handed to a worker, with the action the plan chose for it."""

    f: DataFile
    tracked: plan.Tracked
    action: Action


@dataclass
class Finished:
    """What a worker did with one file: compact, since a seed run collects many."""

    id: int
    was: Action
    """The action the worker was given."""
    action: Action | None
    """The action carried out (None: it failed; see ``error``)."""
    path: str | None = None
    size: int | None = None
    fp: tuple[int, int] | None = None
    sha256: str | None = None
    md5: str | None = None
    etag: str | None = None
    transferred: int = 0
    error: str | None = None
    next: WorkItem | None = None
    """Set when a re-hash found other bytes: the download to do now."""
    reused: int = 0
    """Bytes an earlier run had already fetched (a resumed partial)."""
