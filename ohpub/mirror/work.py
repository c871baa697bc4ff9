"""The work of one file, on a worker thread: re-hash it, download it, or (dry run) probe it.

Workers never touch the state or the tree: a download fills ``.ohpub/partial/<id>``
and returns a ``Finished`` record; the main thread places it (``commit``). Failures
come back as records too, so one bad file never stops the others. A streak of network
or server failures (each after its own retries) stops the run in bounded time instead
of spending the retry budget once per file: the workers' own cancel token (a child of the
run's) is cancelled, and every transfer still waiting gives up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from ohpub.local.dest import LocalDest
from ohpub.local.state import FileState, Known, partial_dir, stat_fingerprint
from ohpub.local.tree import utime_within
from ohpub.mirror.types import Events, Finished, MirrorOptions, WorkItem
from ohpub.model import plan
from ohpub.model.errors import NetworkError, OhpubError, ServerError, UnavailableError
from ohpub.model.records import Action, DataFile, StateStatus
from ohpub.remote.client import ApiClient as Client
from ohpub.transfer.downloader import Downloader
from ohpub.transfer.job import TooLargeError

log = logging.getLogger("ohpub")

DEAD_AFTER = 5
"""Transfers in a row that end in network or server errors before a run stops trying."""


def tracked_view(fs: FileState) -> plan.Tracked:
    """The plan's view of a state record."""
    return plan.Tracked(fs.id, fs.path, fs.size, fs.mtime_ns, fs.sha256, StateStatus(fs.status))


def unchanged(f: DataFile, known: Known) -> bool:
    """The listing says of ``f`` what its record holds, and its status stays: nothing to
    write. Most records of a re-run are: their JSON text (stored canonically, see
    ``FileState.text_of``) is compared without parsing."""
    status = StateStatus(known.status)
    return plan.relisted_status(status, has_path=known.path is not None) is status and (
        known.raw == FileState.text_of(f.raw)
        and (known.username, known.user_id, known.datatype_ids)
        == (f.username, f.user.id, FileState.ids_text(f.datatype_ids))
    )


def known_view(known: Known) -> plan.Tracked:
    """The plan's view of an unchanged record."""
    k = known
    return plan.Tracked(k.id, k.path, k.size, k.mtime_ns, k.sha256, StateStatus(k.status))


def fresh_state(f: DataFile, row: FileState | None, now: float) -> tuple[FileState, plan.Tracked]:
    """The state record to write for a listed file that is new (``row`` None) or not
    ``unchanged``, and the plan's view of it.

    A file relisted after being marked removed-upstream is present again (or pending). A
    record whose text differs is written again even when only its form changed (one
    written by an older ohpub, with ``datatypes`` in the server's order of that day):
    afterwards its text compares equal.
    """
    fresh = FileState.from_datafile(f, now)
    if row is None:
        return fresh, tracked_view(fresh)
    ts = row  # its JSON columns are parsed from here on, where they are read
    status = plan.relisted_status(StateStatus(ts.status), has_path=bool(ts.path))
    ts.last_seen = now
    ts.raw, ts.metadata = fresh.raw, fresh.metadata
    ts.username, ts.user_id = fresh.username, fresh.user_id
    ts.datatype_ids, ts.status = fresh.datatype_ids, status.value
    return ts, tracked_view(ts)


def _resumable_ids(pdir: Path) -> set[int]:
    """Ids whose partial download the next transfer continues: bytes, and a sidecar
    naming the object's ETag."""
    names: dict[str, bool] = {}
    try:
        with os.scandir(pdir) as it:
            for e in it:
                names[e.name] = e.is_file(follow_symlinks=False)
    except OSError:
        return set()
    out: set[int] = set()
    for name, regular in names.items():
        if not (regular and name.isdigit() and names.get(name + ".json")):
            continue
        with contextlib.suppress(OSError):
            if os.lstat(pdir / name).st_size > 0:
                out.add(int(name))
    return out


class Worker:
    """Runs work items; shared by the pool's threads."""

    def __init__(self, client: Client, opts: MirrorOptions, events: Events, *, dry: bool) -> None:
        self.dest = opts.dest
        self.target = opts.destination or LocalDest(opts.dest)
        self.max_size = opts.max_size
        self.events = events
        self.dry = dry
        own = client.scoped()
        self.stop = own.cancel
        """Cancelled with the run, or alone after a streak of failures (``dead``)."""
        self.downloader = Downloader(own, storage_slots=opts.jobs)
        self.dead: str | None = None
        self._partials = _resumable_ids(partial_dir(self.dest))
        """Ids with a resumable partial when the run began (one directory scan, not two
        lstat calls per listed file)."""
        self._trouble = 0
        self._lock = threading.Lock()

    def disk_facts(self, file_id: int, tracked: plan.Tracked) -> plan.Disk:
        """What the plan needs to know from disk about one file."""
        fp = self.target.fingerprint(tracked.path) if tracked.path else None
        waiting = False
        if tracked.path is None and tracked.sha256 is not None:
            part = stat_fingerprint(partial_dir(self.dest) / str(file_id))
            waiting = plan.waiting_partial(tracked, part)
        return plan.Disk(fp, partial=file_id in self._partials, waiting=waiting)

    def run(self, item: WorkItem) -> Finished:
        self.stop.check()
        if item.action is Action.REHASH:
            return self._rehash(item)
        if self.dry:
            return self._probe(item)
        return self._transfer(item)

    def _rehash(self, item: WorkItem) -> Finished:
        tv = item.tracked
        try:
            digest = self.target.digest(tv.path or "")
        except OSError:
            verdict = Action.DOWNLOAD
        else:
            verdict = plan.after_rehash(tv, digest.sha256, digest.size)
        if verdict is Action.KEEP:
            fp = self.target.fingerprint(tv.path or "")
            return Finished(item.f.id, Action.REHASH, Action.KEEP, tv.path, size=tv.size, fp=fp)
        log.info("file %s at %s changed on disk; downloading again", item.f.id, tv.path)
        nxt = WorkItem(
            item.f, tv, Action.RESUME if item.f.id in self._partials else Action.DOWNLOAD
        )
        return Finished(item.f.id, Action.REHASH, None, tv.path, next=nxt)

    def _probe(self, item: WorkItem) -> Finished:
        """The dry run's transfer: one ranged byte tells size and availability."""
        try:
            size = self.downloader.probe_size(item.f)
        except OhpubError as exc:
            return Finished(item.f.id, item.action, Action.UNAVAILABLE, error=exc.message)
        late = plan.transfer_action(size, self.max_size)
        return Finished(item.f.id, item.action, late or item.action, size=size)

    def _transfer(self, item: WorkItem) -> Finished:
        f = item.f
        part = partial_dir(self.dest) / str(f.id)

        def progress(n: int) -> None:
            self.stop.check()
            self.events.progress(n)

        self.events.started(f)
        try:
            d = self.downloader.to_part(  # opened below DEST, no symlink followed
                f,
                part,
                progress,
                max_size=self.max_size,
                root=self.dest,
                on_total=self.events.sized,
                on_reused=self.events.reused,
            )
        except UnavailableError as exc:
            return Finished(f.id, item.action, Action.UNAVAILABLE, error=exc.message)
        except TooLargeError as exc:
            return Finished(f.id, item.action, Action.SKIP, size=exc.size, error=exc.message)
        except OhpubError as exc:
            if isinstance(exc, (NetworkError, ServerError)):
                self._server_trouble(exc)
            return Finished(f.id, item.action, None, item.tracked.path, error=exc.message)
        except OSError as exc:
            return Finished(f.id, item.action, None, error=f"file {f.id}: {exc.strerror or exc}")
        finally:
            self.events.finished(f)
        with contextlib.suppress(OSError, OverflowError, ValueError):
            t = f.created.timestamp()
            utime_within(self.dest, part.relative_to(self.dest).as_posix(), (t, t))  # h4
        with self._lock:
            self._trouble = 0
        return Finished(
            f.id,
            item.action,
            Action.RESUME if d.resumed else Action.DOWNLOAD,
            size=d.size,
            sha256=d.sha256,
            md5=d.md5,
            etag=d.etag,
            transferred=d.transferred,
            reused=d.reused,
        )

    def _server_trouble(self, exc: OhpubError) -> None:
        """Count a transfer lost to the network or the server; stop the run after a streak."""
        with self._lock:
            self._trouble += 1
            if self._trouble >= DEAD_AFTER and self.dead is None:
                self.dead = (
                    f"stopping: {self._trouble} downloads in a row failed; last: {exc.message}"
                )
                self.stop.cancel()


__all__ = [
    "Worker",
    "WorkItem",
    "Finished",
    "fresh_state",
    "known_view",
    "tracked_view",
    "unchanged",
]
