"""One file: resolve the signed URL, stream it with resume, hash, verify.

Bytes go to a partial file first (``<part>``, with a small JSON sidecar that remembers
the storage ETag, and for a parallel transfer which ranges are done), hashed with sha256
and md5 as they arrive. An interrupted transfer continues with ``Range: bytes=N-`` and
``If-Range: <etag>``, so a changed object answers 200 and the partial is restarted
instead of being spliced. The partial is only handed back after its length and (for a
plain MD5 ETag) its checksum match, and after fsync; the caller renames it into place.

Files of at least ``Config.range_cutoff`` bytes may go on as parallel ranges over several
storage connections (``transfer.ranges``) when their first stream's measured rate says so
(``transfer.decide``). Files of ``SMALL_OBJECT`` bytes and less keep no sidecar: they
restart from zero after an interruption.

Bytes are stored exactly as served: ``.gz`` objects come with ``Content-Encoding: gzip``
and must not be decoded, or the file and every Range offset would be wrong.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ohpub.local import tree
from ohpub.local.tree import DiskError
from ohpub.model.config import Config, RetryPolicy
from ohpub.model.errors import ServerError
from ohpub.model.records import DataFile
from ohpub.remote.client import ApiClient as Client
from ohpub.transfer.job import (
    SMALL_OBJECT,
    Downloaded,
    FileSink,
    Job,
    Lanes,
    ProgressFn,
    StreamSink,
    TooLargeError,
    _noop,
    _open_partial,
    load_meta,
)
from ohpub.transfer.ranges import resume_ranged, run_ranged
from ohpub.transfer.sequential import Sequential
from ohpub.transfer.storage import Source, open_answer, storage_retrier

log = logging.getLogger("ohpub")


class Downloader(Lanes):
    """Downloads files through a ``Client``; safe to share between worker threads."""

    def __init__(
        self,
        client: Client,
        *,
        retry: RetryPolicy | None = None,
        key_max_age: float | None = None,
        refresh: Callable[[int], DataFile] | None = None,
        storage_slots: int | None = None,
        config: Config | None = None,
    ) -> None:
        self.client = client
        config = config or client.config
        super().__init__(config, retry or client.retry, storage_slots)
        self.cancel = client.cancel  # the client's (a run's scoped one), whatever ``config``
        self.key_max_age = config.key_max_age if key_max_age is None else key_max_age
        self.refresh = refresh or client.get_file

    def source(self, f: DataFile) -> Source:
        return Source(self.client, f, self.refresh, self.key_max_age)

    def to_part(
        self,
        f: DataFile,
        part: Path,
        progress: ProgressFn = _noop,
        *,
        max_size: int | None = None,
        root: Path | None = None,
        on_total: Callable[[int], None] | None = None,
        on_reused: Callable[[int], None] | None = None,
    ) -> Downloaded:
        """Download into ``part`` (resuming what is there), verified and fsynced.

        The partial and its sidecar are opened below ``root`` (DEST for a mirror; the
        target's folder by default) without following any symlink (``tree.open_nofollow``):
        a symlinked ``.ohpub/partial`` cannot lead the bytes outside DEST.
        """
        base = root if root is not None else part.parent
        rel = part.relative_to(base).as_posix()
        meta_path = tree.Below(base, rel + ".json")
        meta = load_meta(meta_path, f.id)
        etag = meta.get("etag") if isinstance(meta.get("etag"), str) else None
        fd = _open_partial(base, rel, part)
        try:
            size = os.fstat(fd).st_size
            if etag is None:
                size = 0
            sink = FileSink(fd, 0)
            job = Job(self.source(f), sink, etag, meta_path, progress, max_size)
            job.on_total = on_total
            job.on_reused = on_reused
            try:
                result = resume_ranged(self, job, sink, meta, size)
                if result is None and "chunk" in meta:
                    size = 0  # a sparse partial of ranges the sidecar no longer describes
                if result is None:
                    result = self._sequential(job, sink, size)
                os.fsync(fd)
            except DiskError as exc:
                exc.message = exc.message.replace("cannot write:", f"cannot write {part}:")
                raise
            except OSError as exc:
                raise DiskError(exc, part) from exc
            finally:
                job.sink.close()
        finally:
            os.close(fd)
        # The sidecar stays until the caller has placed the file: if the run dies before
        # that, the next one finds a complete partial it can confirm with one request.
        return result

    def _sequential(self, job: Job, sink: FileSink, size: int) -> Downloaded:
        """From byte ``size`` of the partial over one connection, going parallel when the
        probe of that stream says more connections would finish it sooner."""
        sink.resume_at(size)
        job.reuse(size)
        seq = Sequential(self, job)
        result = seq.run()
        if result is not None:
            return result
        if seq.handoff is None:  # run() returns None only with an answer to hand off
            raise ServerError(f"file {job.f.id}: internal error (no answer to hand off)")
        return run_ranged(self, job, sink, seq.handoff)

    def probe_size(self, f: DataFile) -> int | None:
        """The object's size, from a one-byte Range request (the API has no size field)."""
        retry = storage_retrier(self.retry, f, self.cancel)
        headers = {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
        with open_answer(self.source(f), headers, retry, self.slots) as answer:
            return answer.total

    def to_stream(self, f: DataFile, out: BinaryIO, progress: ProgressFn = _noop) -> Downloaded:
        """Stream the raw bytes to ``out`` (stdout); verified at the end, nothing to undo."""
        job = Job(self.source(f), StreamSink(out), None, None, progress)
        try:
            result = Sequential(self, job).run()
        finally:
            job.sink.close()
        if result is None:  # never: a stream does not go parallel
            raise ServerError(f"file {f.id}: internal error (stream went parallel)")
        with contextlib.suppress(OSError, ValueError):
            out.flush()
        return result


__all__ = ["Downloaded", "Downloader", "TooLargeError", "SMALL_OBJECT"]
