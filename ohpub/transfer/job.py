"""One transfer's parts: the job, its sinks (a partial file or a stream), the body pump,
the resume sidecar, and ``Lanes``, what a transfer needs of the downloader running it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ohpub.local import tree
from ohpub.local.tree import DiskError
from ohpub.model.config import Config, RetryPolicy
from ohpub.model.errors import OhpubError
from ohpub.model.records import DataFile
from ohpub.remote.http import Retrier
from ohpub.transfer.bytepath import BodyReader, Digests, Writeback, finish_body, pwrite_all
from ohpub.transfer.decide import SplitProbe
from ohpub.transfer.storage import Answer, Source

log = logging.getLogger("ohpub")

SMALL_OBJECT = 1024 * 1024
"""Up to this size a partial has no resume sidecar: resuming it would save one small
request, while the sidecar costs a write, a rename and an unlink per file."""


ProgressFn = Callable[[int], None]


def _noop(nbytes: int) -> None:
    return None


@dataclass
class Downloaded:
    size: int
    sha256: str
    md5: str
    etag: str | None
    resumed: bool
    transferred: int
    record: DataFile
    """The record last used (a re-minted one when the key had to be refreshed)."""
    reused: int = 0
    """Bytes of the file that an earlier run had already downloaded (kept, not fetched)."""


class TooLargeError(OhpubError):
    """The object is larger than --max-size; not an error of the run."""

    def __init__(self, file_id: int, size: int, limit: int) -> None:
        super().__init__(f"file {file_id}: {size} bytes is larger than --max-size ({limit} bytes)")
        self.size = size


class Sink:
    """Where the bytes of one sequential transfer go, in order, hashed once."""

    restartable = True

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset
        self.digests = Digests()

    def buffer(self) -> memoryview:
        return self.digests.buffer()

    def commit(self, n: int) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

    def ensure_hashed(self) -> None:
        """The digests cover every byte below ``offset`` (a resumed prefix is read once)."""

    def close(self) -> None:
        self.digests.close()


class FileSink(Sink):
    """A partial file written at offsets; a resumed prefix is hashed only once it is kept."""

    def __init__(self, fd: int, offset: int) -> None:
        super().__init__(offset)
        self.fd = fd
        self.writeback = Writeback(fd)
        self._unhashed = offset

    def commit(self, n: int) -> None:
        view = self.digests.buffer()[:n]
        try:
            pwrite_all(self.fd, view, self.offset)
        except OSError as exc:
            raise DiskError(exc) from exc
        self.digests.consume(n)
        self.writeback.wrote(n)
        self.offset += n

    def resume_at(self, size: int) -> None:
        """Continue after the first ``size`` bytes on disk (hashed when they are kept)."""
        try:
            os.ftruncate(self.fd, size)
        except OSError as exc:
            raise DiskError(exc) from exc
        self.digests.reset()
        self.offset = self._unhashed = size

    def ensure_hashed(self) -> None:
        if self._unhashed:
            end, self._unhashed = self._unhashed, 0
            self.digests.hash_fd(self.fd, 0, end)

    def restart(self) -> None:
        try:
            os.ftruncate(self.fd, 0)
        except OSError as exc:
            raise DiskError(exc) from exc
        self.offset = self._unhashed = 0
        self.digests.reset()


class StreamSink(Sink):
    """An append-only stream (stdout): a 200 after a resume skips what was already sent."""

    restartable = False

    def __init__(self, out: BinaryIO) -> None:
        super().__init__(0)
        self.out = out
        self.skip = 0

    def commit(self, n: int) -> None:
        view = self.digests.buffer()[:n]
        drop = min(self.skip, n)
        self.skip -= drop
        try:
            self.out.write(view[drop:])
        except OSError as exc:
            raise DiskError(exc) from exc
        self.digests.consume(n, start=drop)
        self.offset += n - drop

    def restart(self) -> None:
        self.skip = self.offset


@dataclass
class Job:
    """What one transfer knows while it runs."""

    source: Source
    sink: Sink
    etag: str | None
    meta_path: tree.Below | None
    progress: ProgressFn
    max_size: int | None = None
    total: int | None = None
    transferred: int = 0
    resumed: bool = False
    checksum_retries: int = 0
    on_total: Callable[[int], None] | None = None
    """Told the object's size once, when storage first announces it (progress displays)."""
    reused: int = 0
    """Bytes of a partial from an earlier run that this transfer keeps (not fetched again)."""
    on_reused: Callable[[int], None] | None = None
    """Told how many bytes of the file were already on disk from an earlier run (negative
    when a restart drops them); ``progress`` counts only the bytes that arrive now."""

    @property
    def f(self) -> DataFile:
        return self.source.record

    def reuse(self, nbytes: int) -> None:
        """``nbytes`` of a partial left by an earlier run are kept (negative: dropped).
        Told to ``on_reused``, not to ``progress``: nothing was fetched, and a display that
        counted them would show a rate and a total this run never had."""
        nbytes = max(nbytes, -self.reused)
        if not nbytes:
            return
        self.reused += nbytes
        if self.on_reused is not None:
            self.on_reused(nbytes)

    def restart(self) -> None:
        """Start over from byte 0 (the object changed, or the server ignores Range)."""
        if self.sink.restartable:
            dropped = self.reused
            self.reuse(-dropped)
            self.progress(-(self.sink.offset - dropped))
        self.sink.restart()
        self.resumed = False

    def headers(self) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity"}
        if self.sink.offset > 0 and self.etag:
            headers["Range"] = f"bytes={self.sink.offset}-"
            headers["If-Range"] = f'"{self.etag}"'
        elif self.sink.offset > 0 and self.sink.restartable:
            self.restart()
        return headers

    def result(self, started_at: int) -> Downloaded:
        sha, md5 = self.sink.digests.hexdigests()
        return Downloaded(
            size=self.sink.offset,
            sha256=sha,
            md5=md5,
            etag=self.etag,
            resumed=self.resumed and started_at > 0,
            transferred=self.transferred,
            record=self.f,
            reused=self.reused,
        )


def pump(
    resp: Any,
    sink: Any,
    retry: Retrier,
    end: int | None,
    got: Callable[[int], None],
    probe: SplitProbe | None = None,
) -> bool:
    """Read the body into ``sink`` (``buffer()``/``commit(n)``/``offset``) up to byte
    ``end`` or the body's end. Every read that brings bytes restarts the retry budget.
    Transport errors propagate to the caller's retry, after the bytes read before them
    are kept. With a ``probe``, stops early (False: the body goes on, unread) when the
    probe says the rest should come as ranges."""
    reader = BodyReader(resp)
    while end is None or sink.offset < end:
        view = sink.buffer()
        if end is not None and end - sink.offset < len(view):
            view = view[: end - sink.offset]
        watch = probe if probe is not None and probe.watching else None
        if watch is not None:
            watch.fill_started()
        got_ = reader.fill(view)
        if watch is not None:
            watch.filled(got_.n)
        if got_.n:
            sink.commit(got_.n)
            retry.progress()
            got(got_.n)
        if got_.error is not None:
            raise got_.error
        if got_.ended:
            break
        if watch is not None and watch.split():
            return False
    finish_body(resp)
    return True


def _open_partial(base: Path, rel: str, part: Path) -> int:
    """Open the partial for writing below ``base``; never through a symlink, neither at
    its name (something else there is removed) nor at a folder on the way."""
    st = tree.lstat_within(base, rel)
    if st is not None and not stat.S_ISREG(st.st_mode):
        tree.remove_within(base, rel)
    try:
        return tree.open_nofollow(base, rel, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise DiskError(exc, part) from exc


def load_meta(path: tree.Below, file_id: int) -> dict[str, Any]:
    """The resume sidecar of one partial, or {} when it is missing or not this file's."""
    data = tree.read_nofollow(path.root, path.rel, 64 * 1024)
    try:
        meta = json.loads(data) if data is not None else {}
    except ValueError:
        return {}
    if not isinstance(meta, dict) or meta.get("id") != file_id:
        return {}
    return meta


def save_meta(path: tree.Below, file_id: int, etag: str, total: int | None, **extra: Any) -> None:
    """Write the sidecar atomically (a kill -9 leaves the old one or the new one), through
    a fresh temporary file and no symlink."""
    data = json.dumps({"id": file_id, "etag": etag, "total": total, **extra}).encode()
    tree.write_atomic(path.root, path.rel, [data])


class Lanes:
    """What one transfer needs of the downloader that runs it: its settings, its retry
    policy, its cancel token, and the storage connections it may use (``slots``,
    ``width``). The
    ``Downloader`` is one; ``Sequential`` and ``Ranged`` see only this."""

    def __init__(self, config: Config, retry: RetryPolicy, storage_slots: int | None) -> None:
        self.config = config
        self.retry = retry
        self.cancel = config.cancel
        """Every wait of a transfer gives up on it (``model.cancel``)."""
        self.width = max(1, storage_slots or config.jobs)
        """Storage connections one big file may use at once (its ranges)."""
        self.slots: Any = (
            threading.BoundedSemaphore(storage_slots) if storage_slots else contextlib.nullcontext()
        )
        """Transfers from storage at once (``--jobs``); the download view has the client's own
        Open Humans limit, so the two loads are bounded separately."""

    def may_split(self, job: Job, answer: Answer) -> bool:
        """A big file on storage that serves ranges, into a partial file: worth watching
        whether its stream should become ranges (``transfer.decide``)."""
        return (
            isinstance(job.sink, FileSink)
            and self.width > 1
            and answer.status in (200, 206)
            and answer.ranges
            and bool(job.etag)
            and job.total is not None
            and job.total >= self.config.range_cutoff
            and job.total - job.sink.offset > 2 * self.config.range_size
        )
