"""One file: resolve the signed URL, stream it with resume, hash, verify.

Bytes go to a partial file first (``<part>``, with a small JSON sidecar that remembers
the storage ETag, and for a parallel transfer which ranges are done), hashed with sha256
and md5 as they arrive. An interrupted transfer continues with ``Range: bytes=N-`` and
``If-Range: <etag>``, so a changed object answers 200 and the partial is restarted
instead of being spliced. The partial is only handed back after its length and (for a
plain MD5 ETag) its checksum match, and after fsync; the caller renames it into place.

Files of at least ``Config.range_cutoff`` bytes are fetched as parallel ranges over
several storage connections (``ohpub.ranges``). Files of ``SMALL_OBJECT`` bytes and less
keep no sidecar: they restart from zero after an interruption.

Bytes are stored exactly as served: ``.gz`` objects come with ``Content-Encoding: gzip``
and must not be decoded, or the file and every Range offset would be wrong.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ohpub.api import Client
from ohpub.bytepath import Digests, Writeback, fill, finish_body, pwrite_all
from ohpub.config import Config, RetryPolicy
from ohpub.errors import ChecksumError, OhpubError, ServerError
from ohpub.http import TRANSPORT_ERRORS, Failure, Retrier, failure_of
from ohpub.records import DataFile
from ohpub.storage import MD5_ETAG, Answer, Source, open_answer, storage_retrier
from ohpub.tree import DiskError, meta_path_of, regular_size

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


class TooLargeError(OhpubError):
    """The object is larger than --max-size; not an error of the run."""

    def __init__(self, file_id: int, size: int, limit: int) -> None:
        super().__init__(f"file {file_id}: {size} bytes is larger than --max-size ({limit} bytes)")
        self.size = size


# -- sinks ------------------------------------------------------------------------------------


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
        self.writeback.wrote(self.offset, n)
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


# -- one sequential transfer ------------------------------------------------------------------


@dataclass
class Job:
    """What one transfer knows while it runs."""

    source: Source
    sink: Sink
    etag: str | None
    meta_path: Path | None
    progress: ProgressFn
    max_size: int | None = None
    total: int | None = None
    transferred: int = 0
    resumed: bool = False
    checksum_retries: int = 0

    @property
    def f(self) -> DataFile:
        return self.source.record

    def restart(self) -> None:
        """Start over from byte 0 (the object changed, or the server ignores Range)."""
        self.progress(-self.sink.offset if self.sink.restartable else 0)
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
        )


def pump(
    resp: Any, sink: Any, retry: Retrier, end: int | None, got: Callable[[int], None]
) -> None:
    """Read the body into ``sink`` (``buffer()``/``commit(n)``/``offset``) up to byte
    ``end`` or the body's end. Every read that brings bytes restarts the retry budget.
    Transport errors propagate to the caller's retry, after the bytes read before them
    are kept."""
    while end is None or sink.offset < end:
        view = sink.buffer()
        if end is not None and end - sink.offset < len(view):
            view = view[: end - sink.offset]
        got_ = fill(resp, view)
        if got_.n:
            sink.commit(got_.n)
            retry.progress()
            got(got_.n)
        if got_.error is not None:
            raise got_.error
        if got_.ended:
            break
    finish_body(resp)


class Sequential:
    """The transfer loop over one connection at a time: open, check, pump, verify."""

    def __init__(self, downloader: Downloader, job: Job, *, parallel: bool = True) -> None:
        self.d = downloader
        self.job = job
        self.parallel = parallel
        self.retry = storage_retrier(downloader.retry, job.f)

    def run(self) -> Downloaded | None:
        """The finished download, or None when the caller should go parallel
        (``self.handoff`` then holds the first answer, not yet read)."""
        job, started_at = self.job, self.job.sink.offset
        job.resumed = started_at > 0
        self.handoff: Answer | None = None
        while True:
            answer = open_answer(job.source, job.headers(), self.retry, self.d.slots)
            try:
                outcome = self._read(answer)
            except TRANSPORT_ERRORS as exc:
                answer.close()
                self.retry.wait(failure_of(exc), answer.resp.url)
                continue
            except BaseException:
                answer.close()
                raise
            if outcome == "ranged":
                self.handoff = answer
                return None
            answer.close()
            if outcome == "retry":
                continue
            if self._verified():
                return job.result(started_at)

    def _read(self, answer: Answer) -> str:
        """Check one answer and read its body: "done", "retry" or "ranged"."""
        job, sink = self.job, self.job.sink
        if answer.status == 416:
            return self._range_not_satisfiable(answer)
        if answer.status == 200 and sink.offset:
            log.debug("file %s: server sent the whole object; restarting", job.f.id)
            job.restart()
        elif answer.status == 206 and answer.first != sink.offset:
            raise ServerError(
                f"file {job.f.id}: storage sent a Content-Range that does not continue "
                f"at byte {sink.offset}"
            )
        job.total = answer.total
        if job.max_size is not None and job.total is not None and job.total > job.max_size:
            raise TooLargeError(job.f.id, job.total, job.max_size)
        if answer.etag and answer.etag != job.etag:
            job.etag = answer.etag
            if job.meta_path is not None and (job.total is None or job.total > SMALL_OBJECT):
                save_meta(job.meta_path, job.f.id, job.etag, job.total)
        if self.parallel and self.d.goes_parallel(job, answer):
            return "ranged"
        sink.ensure_hashed()
        pump(answer.resp, sink, self.retry, job.total, self._got)
        if job.total is not None and sink.offset < job.total:
            at = f"at byte {sink.offset} of {job.total}"
            self.retry.wait(Failure(f"connection broken mid-body ({at})"))
            return "retry"
        if job.total is not None and sink.offset > job.total:
            raise ServerError(f"file {job.f.id}: storage sent more bytes than it announced")
        return "done"

    def _got(self, n: int) -> None:
        self.job.transferred += n
        self.job.progress(n)

    def _range_not_satisfiable(self, answer: Answer) -> str:
        job, sink = self.job, self.job.sink
        if answer.total is not None and answer.total == sink.offset and job.etag:
            job.total = answer.total
            return "done"  # the partial is complete; _verified checks its bytes
        job.restart()
        job.etag = None
        self.retry.wait(Failure("416 range not satisfiable; restarting"))
        return "retry"

    def _verified(self) -> bool:
        """The ETag of a single-part upload is the MD5 of the bytes: check it."""
        job, sink = self.job, self.job.sink
        sink.ensure_hashed()
        _sha, md5 = sink.digests.hexdigests()
        if not (job.etag and MD5_ETAG.match(job.etag) and md5 != job.etag):
            return True
        job.checksum_retries += 1
        if job.checksum_retries > 1 or not sink.restartable:
            raise ChecksumError(
                f"file {job.f.id} ({job.f.basename}): checksum mismatch "
                f"(md5 {md5}, storage ETag {job.etag}); not saved"
            )
        log.debug("file %s: md5 mismatch, downloading again from the start", job.f.id)
        job.restart()
        return False


# -- the public face ----------------------------------------------------------------------------


class Downloader:
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
        self.config = config or Config()
        self.retry = retry or client.retry
        self.key_max_age = self.config.key_max_age if key_max_age is None else key_max_age
        self.refresh = refresh or client.get_file
        self.width = max(1, storage_slots or self.config.jobs)
        """Storage connections one big file may use at once (its ranges)."""
        self.slots: Any = (
            threading.BoundedSemaphore(storage_slots) if storage_slots else contextlib.nullcontext()
        )
        """Transfers from storage at once (``--jobs``); the download view has the client's own
        Open Humans limit, so the two loads are bounded separately."""

    def source(self, f: DataFile) -> Source:
        return Source(self.client, f, self.refresh, self.key_max_age)

    def goes_parallel(self, job: Job, answer: Answer) -> bool:
        """A big file on storage that serves ranges, into a partial file: fetch it as ranges."""
        return (
            isinstance(job.sink, FileSink)
            and self.width > 1
            and answer.status in (200, 206)
            and answer.ranges
            and bool(job.etag)
            and job.total is not None
            and job.total >= self.config.range_cutoff
            and job.total - job.sink.offset > self.config.range_size
        )

    def to_part(
        self,
        f: DataFile,
        part: Path,
        progress: ProgressFn = _noop,
        *,
        max_size: int | None = None,
    ) -> Downloaded:
        """Download into ``part`` (resuming what is there), verified and fsynced."""
        from ohpub.ranges import resume_ranged

        meta_path = meta_path_of(part)
        meta = load_meta(meta_path, f.id)
        etag = meta.get("etag") if isinstance(meta.get("etag"), str) else None
        fd = _open_partial(part)
        try:
            size = regular_size(part) or 0
            if etag is None:
                size = 0
            sink = FileSink(fd, 0)
            job = Job(self.source(f), sink, etag, meta_path, progress, max_size)
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
        first answer shows a big file on a storage that serves ranges."""
        from ohpub.ranges import run_ranged

        sink.resume_at(size)
        if size:
            job.progress(size)
        seq = Sequential(self, job)
        result = seq.run()
        if result is not None:
            return result
        if seq.handoff is None:  # run() returns None only with an answer to hand off
            raise ServerError(f"file {job.f.id}: internal error (no answer to hand off)")
        return run_ranged(self, job, sink, seq.handoff)

    def probe_size(self, f: DataFile) -> int | None:
        """The object's size, from a one-byte Range request (the API has no size field)."""
        retry = storage_retrier(self.retry, f)
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


def _open_partial(part: Path) -> int:
    """Open the partial for writing; never through a symlink planted at its name."""
    try:
        if regular_size(part) is None and os.path.lexists(part):
            part.unlink()
        return os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise DiskError(exc, part) from exc


def load_meta(path: Path, file_id: int) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict) or meta.get("id") != file_id:
        return {}
    return meta


def save_meta(path: Path, file_id: int, etag: str, total: int | None, **extra: Any) -> None:
    """Write the sidecar atomically (a kill -9 leaves the old one or the new one)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)  # a fresh file, never through a planted symlink
        tmp.write_text(json.dumps({"id": file_id, "etag": etag, "total": total, **extra}))
        os.replace(tmp, path)
    except OSError as exc:
        raise DiskError(exc, path) from exc


__all__ = ["Downloaded", "Downloader", "TooLargeError", "SMALL_OBJECT"]
