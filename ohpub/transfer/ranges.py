"""Parallel ranges for big files: several storage connections into one partial.

At or above ``Config.range_cutoff`` bytes, a file is cut into chunks of
``Config.range_size`` bytes. The first answer (a plain GET, or a resume) keeps streaming
chunk after chunk while nobody else has claimed the next one; more connections (up to
the Downloader's width, each within its storage slots, ``--jobs``) each claim the lowest
unclaimed chunk and GET exactly it, with ``If-Range`` on the ETag. Bytes are written in
place (pwrite at their offsets). The signed URL is resolved once and reused by every
range (re-resolved on 403); Open Humans itself sees one download-view request.

MD5 does not compose, so one consumer (the calling thread) hashes the file IN ORDER: it
reads back from the partial the contiguous prefix written so far, as it grows.

Resumable across runs: the sidecar (``<part>.json``) lists the chunks that are done, and
is replaced atomically after each one, so a kill -9 loses at most the chunks in flight.
A storage that answers a range with 200 and the same ETag ignores Range: the ranges stop
and one stream finishes the file. A 200 with another ETag means the object changed: the
partial starts over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from ohpub.local import tree
from ohpub.local.tree import DiskError
from ohpub.model.errors import ChecksumError, ServerError
from ohpub.remote.http import TRANSPORT_ERRORS, Failure, Retrier, failure_of
from ohpub.transfer.bytepath import BUFFER, Writeback, pwrite_all
from ohpub.transfer.job import Downloaded, FileSink, Job, Lanes, TooLargeError, pump, save_meta
from ohpub.transfer.sequential import Sequential
from ohpub.transfer.storage import MD5_ETAG, Answer, open_answer, storage_retrier

log = logging.getLogger("ohpub")


class _Changed(Exception):
    """A range answered with another ETag: the object is not the one on disk."""


class _NoRanges(Exception):
    """A range answered 200 with the same ETag: this storage ignores Range."""


class _Stop(Exception):
    """The transfer is over (an error elsewhere, or done): stop reading."""


class Chunks:
    """Which chunks are claimed, how far each is written, which are done; thread-safe."""

    def __init__(
        self, total: int, size: int, done: set[int], on_done: Callable[[list[int]], None]
    ) -> None:
        self.total, self.size = total, size
        self.n = max(1, -(-total // size))
        self.done = {k for k in done if 0 <= k < self.n}
        self.claimed = set(self.done)
        self.written = [self.length(k) if k in self.done else 0 for k in range(self.n)]
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.stopped = False
        self.on_done = on_done

    def bounds(self, k: int) -> tuple[int, int]:
        return k * self.size, min(self.total, (k + 1) * self.size)

    def length(self, k: int) -> int:
        a, b = self.bounds(k)
        return b - a

    def claim(self, k: int | None = None) -> int | None:
        """Claim chunk ``k`` (None: the lowest unclaimed one); None when not available."""
        with self.cond:
            if self.stopped:
                return None
            if k is None:
                k = next((i for i in range(self.n) if i not in self.claimed), None)
            if k is None or k >= self.n or k in self.claimed:
                return None
            self.claimed.add(k)
            return k

    def unclaim(self, k: int) -> None:
        with self.cond:
            if k not in self.done:
                self.claimed.discard(k)

    def wrote(self, k: int, n: int) -> None:
        with self.cond:
            if self.stopped:
                raise _Stop
            self.written[k] += n
            self.cond.notify_all()

    def finish(self, k: int) -> None:
        with self.cond:
            if k not in self.done:
                self.done.add(k)
                self.on_done(sorted(self.done))
            self.cond.notify_all()

    def stop(self, exc: BaseException | None = None) -> None:
        with self.cond:
            if self.error is None and exc is not None:
                self.error = exc
            self.stopped = True
            self.cond.notify_all()

    def contiguous(self, pos: int) -> int:
        """The end of the bytes written without a gap from ``pos`` on."""
        k = pos // self.size
        while k < self.n:
            start, end = self.bounds(k)
            reach = start + self.written[k]
            if reach < end:
                return max(pos, reach)
            k += 1
        return self.total

    def written_bytes(self) -> int:
        with self.cond:
            return sum(self.written)


class _RangeSink:
    """One worker's writes into chunk ``k``, at their offsets."""

    def __init__(self, fd: int, chunks: Chunks, k: int, offset: int, buf: memoryview) -> None:
        self.fd, self.chunks, self.k, self.offset = fd, chunks, k, offset
        self._buf = buf
        self._writeback = Writeback(fd)

    def buffer(self) -> memoryview:
        return self._buf

    def commit(self, n: int) -> None:
        try:
            pwrite_all(self.fd, self._buf[:n], self.offset)
        except OSError as exc:
            raise DiskError(exc) from exc
        self._writeback.wrote(self.offset, n)
        self.offset += n
        self.chunks.wrote(self.k, n)


class Ranged:
    """One big file over several connections; ``run()`` from the calling thread."""

    def __init__(self, d: Lanes, job: Job, sink: FileSink, chunks: Chunks) -> None:
        self.d, self.job, self.sink, self.chunks = d, job, sink, chunks
        self.fd = sink.fd
        self.no_ranges = False
        self._lock = threading.Lock()

    def _got(self, n: int) -> None:
        with self._lock:
            self.job.transferred += n
        self.job.progress(n)

    # -- workers ------------------------------------------------------------------------------

    def worker(self, first: Answer | None, k: int | None) -> None:
        """Claim chunks and fill them; ``first`` is an open answer positioned in chunk k.

        Each worker holds one storage slot while it works: a helper waits for one, the
        first worker takes over the slot its answer was opened with, so that a reopened
        connection never goes past ``--jobs``."""
        slot = contextlib.ExitStack()
        if first is not None:
            slot, first.slot = first.slot, contextlib.ExitStack()
        elif self._acquire():
            slot.callback(self._release)
        else:
            return
        answer, buf = first, memoryview(bytearray(BUFFER))
        try:
            while not self.chunks.stopped:
                if k is None and (first is not None or not self.no_ranges):
                    k = self.chunks.claim()
                if k is None:
                    return
                answer = self._fill(k, answer, buf)
                k = None
                if answer is not None and answer.end is not None:
                    k = self.chunks.claim(self._chunk_after(answer))
                    if k is None:
                        answer.close()
                        answer = None
        except _NoRanges:
            self.no_ranges = True
        except _Stop:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            self.chunks.stop(exc)
        finally:
            if answer is not None:
                answer.close()
            slot.close()

    def _chunk_after(self, answer: Answer) -> int:
        """The chunk an open-ended answer's body goes on into (its position now)."""
        return int(answer.first + answer.consumed) // self.chunks.size

    def _acquire(self) -> bool:
        """One storage slot, waiting as long as the transfer runs (False: it ended, or was
        cancelled: the consumer raises that)."""
        slots = self.d.slots
        if not isinstance(slots, threading.Semaphore):
            return True
        while not self.chunks.stopped and not self.d.cancel.cancelled:
            if slots.acquire(timeout=0.2):
                return True
        return False

    def _release(self) -> None:
        slots = self.d.slots
        if isinstance(slots, threading.Semaphore):
            slots.release()

    def _fill(self, k: int, answer: Answer | None, buf: memoryview) -> Answer | None:
        """Fill chunk ``k`` (resuming within it after errors); returns the answer when its
        body goes on past the chunk (an open-ended stream), else None."""
        retry = storage_retrier(self.d.retry, self.job.f, self.d.cancel)
        start, end = self.chunks.bounds(k)
        while True:
            pos = start + self.chunks.written[k]
            if pos >= end:
                self.chunks.finish(k)
                if answer is not None and answer.end is not None and answer.end > end:
                    return answer
                if answer is not None:
                    answer.close()
                return None
            if answer is not None and answer.first + answer.consumed != pos:
                answer.close()  # an open-ended stream that is not where this chunk goes on
                answer = None
            if answer is None:
                answer = self._open(k, pos, end, retry)
            sink = _RangeSink(self.fd, self.chunks, k, pos, buf)
            try:
                pump(answer.resp, sink, retry, end, self._got)
                answer.consumed = sink.offset - answer.first
            except TRANSPORT_ERRORS as exc:
                answer.close()
                answer = None
                retry.wait(failure_of(exc))
                continue
            except BaseException:
                answer.close()
                raise
            if sink.offset < end:  # the body ended early
                answer.close()
                answer = None
                retry.wait(Failure(f"connection broken mid-body (at byte {sink.offset} of {end})"))

    def _open(self, k: int, pos: int, end: int, retry: Retrier) -> Answer:
        headers = {
            "Accept-Encoding": "identity",
            "Range": f"bytes={pos}-{end - 1}",
            "If-Range": f'"{self.job.etag}"',
        }
        answer = open_answer(self.job.source, headers, retry, contextlib.nullcontext())
        same = answer.etag in (None, self.job.etag)
        if answer.status == 206 and answer.first == pos and same:
            return answer
        answer.close()
        self.chunks.unclaim(k)
        if answer.status == 200 and same:
            raise _NoRanges
        if answer.status in (200, 206):
            raise _Changed
        raise ServerError(f"file {self.job.f.id}: storage answered {answer.status} to a range")

    # -- the consumer ---------------------------------------------------------------------------

    def run(self, first: Answer | None) -> str:
        """Fetch and hash every chunk: "done", "changed" or "single" (ranges ignored)."""
        chunks = self.chunks
        k0 = chunks.claim(first.first // chunks.size) if first is not None else None
        if first is not None and k0 is None:
            first.close()
            first = None
        width = max(1, min(self.d.width, chunks.n - len(chunks.done)))
        threads = [
            threading.Thread(
                target=self.worker,
                args=(first, k0) if i == 0 else (None, None),
                name=f"ohpub-range-{i}",
                daemon=True,
            )
            for i in range(width)
        ]
        for t in threads:
            t.start()
        try:
            self._hash_in_order(threads)
        except BaseException as exc:
            chunks.stop(exc)
            raise
        finally:
            chunks.stop()
            _join(threads)
        err = chunks.error
        if isinstance(err, _Changed):
            return "changed"
        if err is not None:
            raise err
        return "done" if len(chunks.done) == chunks.n else "single"

    def _hash_in_order(self, threads: list[threading.Thread]) -> None:
        chunks, digests = self.chunks, self.sink.digests
        digests.reset()
        pos = 0
        while pos < chunks.total:
            with chunks.cond:
                while (avail := chunks.contiguous(pos)) == pos:
                    if chunks.error is not None or not any(t.is_alive() for t in threads):
                        return
                    self.d.cancel.check()
                    chunks.cond.wait(0.2)
            digests.hash_fd(self.fd, pos, avail)
            pos = avail
        self.sink.offset = pos


def _join(threads: list[threading.Thread]) -> None:
    """Wait for every range worker, even through Ctrl-C (raised again after): they write
    into the caller's file descriptor, which must not be closed under them."""
    interrupted: BaseException | None = None
    for t in threads:
        while t.is_alive():
            try:
                t.join()
            except KeyboardInterrupt as exc:
                interrupted = exc
    if interrupted is not None:
        raise interrupted


def _saver(job: Job, total: int, size: int) -> Callable[[list[int]], None]:
    def save(done: list[int]) -> None:
        if job.meta_path is not None and job.etag:
            save_meta(job.meta_path, job.f.id, job.etag, total, chunk=size, done=done)

    return save


def run_ranged(
    d: Lanes,
    job: Job,
    sink: FileSink,
    first: Answer | None,
    done: set[int] | None = None,
    chunk: int | None = None,
) -> Downloaded:
    """Finish ``job`` as parallel ranges (``first``: the open first answer, if any)."""
    total, size = job.total or 0, chunk or d.config.range_size
    if done is None:  # from a sequential start: whole chunks below the offset are done
        done = set(range(sink.offset // size))
    chunks = Chunks(total, size, done, _saver(job, total, size))
    if first is not None:
        k = first.first // size
        chunks.written[k] = first.first - k * size
    try:
        os.ftruncate(sink.fd, total)
    except OSError as exc:
        if first is not None:
            first.close()
        raise DiskError(exc) from exc
    chunks.on_done(sorted(chunks.done))
    log.debug("file %s: %d bytes in %d ranges of %d", job.f.id, total, chunks.n, size)
    outcome = Ranged(d, job, sink, chunks).run(first)
    return _after(d, job, sink, chunks, outcome)


def _after(d: Lanes, job: Job, sink: FileSink, chunks: Chunks, outcome: str) -> Downloaded:
    """Verify a finished parallel transfer, or go on over one stream."""
    if outcome == "done":
        _sha, md5 = sink.digests.hexdigests()
        if not (job.etag and MD5_ETAG.match(job.etag) and md5 != job.etag):
            return job.result(1 if job.resumed else 0)
        job.checksum_retries += 1
        if job.checksum_retries > 1:
            raise ChecksumError(
                f"file {job.f.id} ({job.f.basename}): checksum mismatch "
                f"(md5 {md5}, storage ETag {job.etag}); not saved"
            )
        outcome = "changed"  # start over, once
    # Finish over one stream from the contiguous prefix (ranges ignored), or start over.
    keep = chunks.contiguous(0) if outcome == "single" else 0
    dropped = chunks.written_bytes() - keep
    reused_dropped = max(0, job.reused - keep)  # a resumed prefix past ``keep`` goes too
    job.reuse(-reused_dropped)
    job.progress(-(dropped - reused_dropped))
    if job.meta_path is not None:
        # the done list no longer describes the partial
        tree.remove_within(job.meta_path.root, job.meta_path.rel)
    if outcome == "single" and job.etag:
        if job.meta_path is not None:
            save_meta(job.meta_path, job.f.id, job.etag, chunks.total)
    else:
        job.etag = None
        job.resumed = False
    sink.resume_at(keep)
    result = Sequential(d, job, parallel=False).run()
    if result is None:
        raise ServerError(f"file {job.f.id}: internal error (parallel twice)")
    return result


def resume_ranged(
    d: Lanes, job: Job, sink: FileSink, meta: dict[str, Any], size_on_disk: int
) -> Downloaded | None:
    """Continue a parallel transfer a previous run left (its sidecar lists done chunks);
    None when the sidecar does not describe one."""
    total, size, done = meta.get("total"), meta.get("chunk"), meta.get("done")
    if not (isinstance(total, int) and isinstance(size, int) and size > 0 and job.etag):
        return None
    if not isinstance(done, list) or not all(isinstance(k, int) for k in done):
        return None
    if size_on_disk != total:
        return None
    if job.max_size is not None and total > job.max_size:
        raise TooLargeError(job.f.id, total, job.max_size)
    job.total, job.resumed = total, bool(done)
    chunks_done = {k for k in done if 0 <= k * size < total}
    already = sum(min(total, (k + 1) * size) - k * size for k in chunks_done)
    job.reuse(already)
    sink.offset = 0
    return run_ranged(d, job, sink, None, chunks_done, size)


__all__ = ["Chunks", "Ranged", "resume_ranged", "run_ranged"]
