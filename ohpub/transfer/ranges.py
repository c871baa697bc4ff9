"""Parallel ranges for a big file: several storage connections into one partial.

A transfer gets here when the first stream's measurement says more connections would
finish sooner (``transfer.decide``), with that stream still open mid-body, or from a
previous run's sidecar. The file is counted in blocks of ``Config.range_size`` (at most
``decide.MAX_BLOCKS`` of them: the resume record names the blocks that are done). Connections
(up to the Downloader's width, each within its storage slots, ``--jobs``) claim spans in
ascending order, each a guided share of what is left (``left / (GUIDE x width)``, at
least one block, at most ``MAX_SPAN_BLOCKS``): long spans while much is left (few
requests, so little time lost to each request's latency), short ones at the end (the
connections finish together), and always near the bytes already written, so the
in-order hash follows closely. Each span is one GET of exactly its bytes
(``Range: a-b`` with ``If-Range`` on the ETag) on a kept-alive connection; the first
stream keeps its open body for as long as the bytes after it are unclaimed. Bytes are
written in place (pwrite at their offsets). The signed URL is resolved once and reused by
every range (re-resolved on 403); Open Humans itself sees one download-view request.

MD5 does not compose, so one consumer (the calling thread) hashes the file IN ORDER: it
reads back from the partial the contiguous prefix written so far, as it grows, starting
where the first stream's hashing stopped (no byte is hashed twice).

Resumable across runs: the sidecar (``<part>.json``) lists the blocks that are done; a
small saver thread replaces it atomically every ``SAVE_EVERY`` seconds while blocks
finish, so a kill -9 loses at most the last fraction of a second's blocks and those in
flight, and no worker ever waits for the sidecar's fsync. A storage that answers a range
with 200 and the same ETag ignores Range: the ranges stop and one stream finishes the
file. A 200 with another ETag means the object changed: the partial starts over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ohpub.local import tree
from ohpub.local.tree import DiskError
from ohpub.model.errors import ChecksumError, ServerError
from ohpub.remote import http
from ohpub.remote.http import Failure, Retrier, failure_of
from ohpub.transfer.bytepath import BUFFER, Writeback, pwrite_all
from ohpub.transfer.decide import block_size
from ohpub.transfer.job import Downloaded, FileSink, Job, Lanes, TooLargeError, pump, save_meta
from ohpub.transfer.sequential import Sequential
from ohpub.transfer.storage import MD5_ETAG, Answer, open_answer, storage_retrier

log = logging.getLogger("ohpub")

GUIDE = 2
"""A span is ``left / (GUIDE x width)`` bytes: big while much is left, small at the end."""
MAX_SPAN_BLOCKS = 8
"""The longest span, in blocks: the hash never trails far behind the bytes written."""
SAVE_EVERY = 0.5
"""Seconds between sidecar saves while blocks finish."""


class _Changed(Exception):
    """A range answered with another ETag: the object is not the one on disk."""


class _NoRanges(Exception):
    """A range answered 200 with the same ETag: this storage ignores Range."""


class _Stop(Exception):
    """The transfer is over (an error elsewhere, or done): stop reading."""


@dataclass
class Span:
    """One claimed stretch ``[start, end)`` of the file; written up to ``pos``."""

    start: int
    end: int
    pos: int


class Blocks:
    """Which bytes are claimed and written, which blocks are done; thread-safe.

    Blocks are done when every byte of them is written; claims come from ``todo`` (the
    unclaimed stretches, ascending); ``contiguous`` is how far the file is written
    without a gap. The bytes below ``prefix`` (a first stream's) count as written."""

    def __init__(self, total: int, size: int, done: set[int], width: int, prefix: int = 0) -> None:
        self.total, self.size, self.width = total, size, max(1, width)
        self.n = max(1, -(-total // size))
        self.done = {k for k in done if 0 <= k < self.n} | set(range(prefix // size))
        self.prefix = prefix
        self.todo = self._gaps(prefix)
        self.spans: list[Span] = []
        self.written = prefix + sum(self.length(k) for k in self.done if k * size >= prefix)
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.stopped = False
        self.ended = threading.Event()
        """Set with ``stopped`` (for waits that do not hold ``cond``)."""
        self.changes = 0
        """Bumped whenever a block is done (the saver writes the sidecar when it moved)."""

    def bounds(self, k: int) -> tuple[int, int]:
        return k * self.size, min(self.total, (k + 1) * self.size)

    def length(self, k: int) -> int:
        a, b = self.bounds(k)
        return b - a

    def _gaps(self, prefix: int) -> list[list[int]]:
        """The stretches from ``prefix`` on that no done block covers."""
        gaps: list[list[int]] = []
        pos = prefix
        while pos < self.total:
            k = pos // self.size
            end = self.bounds(k)[1]
            if k not in self.done:
                if gaps and gaps[-1][1] == pos:
                    gaps[-1][1] = end
                else:
                    gaps.append([pos, end])
            pos = end
        return gaps

    def claim(self, at: int | None = None) -> Span | None:
        """The next span: from the lowest unclaimed byte, or exactly at ``at`` (where an
        open stream stands); None when nothing is left there (or the transfer stopped)."""
        with self.cond:
            if self.stopped or not self.todo:
                return None
            i = 0 if at is None else next((j for j, g in enumerate(self.todo) if g[0] == at), -1)
            if i < 0:
                return None
            gap = self.todo[i]
            left = sum(b - a for a, b in self.todo)
            share = left // (GUIDE * self.width)
            share = max(self.size, min(MAX_SPAN_BLOCKS * self.size, share))
            first_boundary = (gap[0] // self.size + 1) * self.size
            nearest = (gap[0] + share + self.size // 2) // self.size * self.size
            end = min(gap[1], max(first_boundary, nearest))
            span = Span(gap[0], end, gap[0])
            if end >= gap[1]:
                del self.todo[i]
            else:
                gap[0] = end
            self.spans.append(span)
            return span

    def wrote(self, span: Span, n: int) -> None:
        """``n`` more bytes of ``span`` are on disk. A block the span has now passed is
        done: a span starts on a block boundary, or at the prefix, below which all is
        written."""
        with self.cond:
            if self.stopped:
                raise _Stop
            before = span.pos
            span.pos += n
            self.written += n
            for k in range(before // self.size, min(self.n, span.pos // self.size + 1)):
                a, b = self.bounds(k)
                if before < b <= span.pos and k not in self.done:
                    self.done.add(k)
                    self.changes += 1
            self.cond.notify_all()

    def release(self, span: Span) -> None:
        """Give back a span nothing was written into (its GET was refused)."""
        with self.cond:
            with contextlib.suppress(ValueError):
                self.spans.remove(span)
            if span.pos != span.start:
                return
            self.todo.append([span.start, span.end])
            self.todo.sort()
            merged: list[list[int]] = []
            for gap in self.todo:
                if merged and merged[-1][1] == gap[0]:
                    merged[-1][1] = gap[1]
                else:
                    merged.append(gap)
            self.todo = merged
            self.cond.notify_all()

    def finish(self, span: Span) -> None:
        with self.cond:
            with contextlib.suppress(ValueError):
                self.spans.remove(span)
            self.cond.notify_all()

    def stop(self, exc: BaseException | None = None) -> None:
        with self.cond:
            if self.error is None and exc is not None:
                self.error = exc
            self.stopped = True
            self.ended.set()
            self.cond.notify_all()

    def contiguous(self, pos: int) -> int:
        """The end of the bytes written without a gap from ``pos`` on (under ``cond``)."""
        while pos < self.total:
            span = next((s for s in self.spans if s.start <= pos < s.end), None)
            if span is not None:
                if span.pos <= pos:
                    return pos
                pos = span.pos
                continue
            k = pos // self.size
            if k not in self.done:
                return pos
            pos = self.bounds(k)[1]
        return self.total

    def complete(self) -> bool:
        with self.cond:
            return all(k in self.done for k in range(self.n))

    def done_list(self) -> list[int]:
        with self.cond:
            return sorted(self.done)


class _RangeSink:
    """One worker's writes into its span, at their offsets."""

    def __init__(
        self, fd: int, blocks: Blocks, span: Span, buf: memoryview, writeback: Writeback
    ) -> None:
        self.fd, self.blocks, self.span = fd, blocks, span
        self.offset = span.pos
        self._buf = buf
        self._writeback = writeback

    def buffer(self) -> memoryview:
        return self._buf

    def commit(self, n: int) -> None:
        try:
            pwrite_all(self.fd, self._buf[:n], self.offset)
        except OSError as exc:
            raise DiskError(exc) from exc
        self._writeback.wrote(n)
        self.offset += n
        self.blocks.wrote(self.span, n)


class Ranged:
    """One big file over several connections; ``run()`` from the calling thread."""

    def __init__(self, d: Lanes, job: Job, sink: FileSink, blocks: Blocks) -> None:
        self.d, self.job, self.sink, self.blocks = d, job, sink, blocks
        self.fd = sink.fd
        self.no_ranges = False
        self._lock = threading.Lock()
        self._writeback = Writeback(sink.fd)

    def _got(self, n: int) -> None:
        with self._lock:
            self.job.transferred += n
        self.job.progress(n)

    # -- workers ------------------------------------------------------------------------------

    def worker(self, first: Answer | None) -> None:
        """Claim spans and fill them; ``first`` is an open answer positioned where the
        first span starts.

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
            span = self.blocks.claim(_at(first)) if first is not None else None
            while not self.blocks.stopped:
                if span is None and not self.no_ranges:
                    span = self.blocks.claim()
                if span is None:
                    return
                answer = self._fill(span, answer, buf)
                span = None
                if answer is not None:  # an open stream: on into the next span, if free
                    span = self.blocks.claim(_at(answer))
                    if span is None:
                        answer.close()
                        answer = None
        except _NoRanges:
            self.no_ranges = True
        except _Stop:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            self.blocks.stop(exc)
        finally:
            if answer is not None:
                answer.close()
            slot.close()

    def _acquire(self) -> bool:
        """One storage slot, waiting as long as the transfer runs (False: it ended, or was
        cancelled: the consumer raises that)."""
        slots = self.d.slots
        if not isinstance(slots, threading.Semaphore):
            return True
        while not self.blocks.stopped and not self.d.cancel.cancelled:
            if slots.acquire(timeout=0.2):
                return True
        return False

    def _release(self) -> None:
        slots = self.d.slots
        if isinstance(slots, threading.Semaphore):
            slots.release()

    def _fill(self, span: Span, answer: Answer | None, buf: memoryview) -> Answer | None:
        """Fill ``span`` (resuming within it after errors); returns the answer when its
        body goes on past the span (an open-ended stream), else None."""
        retry = storage_retrier(self.d.retry, self.job.f, self.d.cancel)
        while True:
            pos, end = span.pos, span.end
            if pos >= end:
                self.blocks.finish(span)
                if answer is not None and (answer.end is None or answer.end > end):
                    return answer
                if answer is not None:
                    answer.close()
                return None
            if answer is not None and _at(answer) != pos:
                answer.close()  # an open-ended stream that is not where this span goes on
                answer = None
            if answer is None:
                try:
                    answer = self._open(span, retry)
                except (_NoRanges, _Changed):
                    self.blocks.release(span)
                    raise
            sink = _RangeSink(self.fd, self.blocks, span, buf, self._writeback)
            try:
                pump(answer.resp, sink, retry, end, self._got)
                answer.consumed = sink.offset - answer.first
            except http.TRANSPORT_ERRORS as exc:
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

    def _open(self, span: Span, retry: Retrier) -> Answer:
        headers = {
            "Accept-Encoding": "identity",
            "Range": f"bytes={span.pos}-{span.end - 1}",
            "If-Range": f'"{self.job.etag}"',
        }
        answer = open_answer(self.job.source, headers, retry, contextlib.nullcontext())
        same = answer.etag in (None, self.job.etag)
        if answer.status == 206 and answer.first == span.pos and same:
            return answer
        answer.close()
        if answer.status == 200 and same:
            raise _NoRanges
        if answer.status in (200, 206):
            raise _Changed
        raise ServerError(f"file {self.job.f.id}: storage answered {answer.status} to a range")

    # -- the consumer ---------------------------------------------------------------------------

    def run(self, first: Answer | None, save: Callable[[list[int]], None]) -> str:
        """Fetch and hash every block: "done", "changed" or "single" (ranges ignored)."""
        blocks = self.blocks
        width = max(1, min(self.d.width, blocks.n - len(blocks.done)))
        threads = [
            threading.Thread(
                target=self.worker,
                args=(first if i == 0 else None,),
                name=f"ohpub-range-{i}",
                daemon=True,
            )
            for i in range(width)
        ]
        saver = _Saver(blocks, save)
        for t in [*threads, saver]:
            t.start()
        try:
            self._hash_in_order(threads)
        except BaseException as exc:
            blocks.stop(exc)
            raise
        finally:
            blocks.stop()
            _join([*threads, saver])
        err = blocks.error
        if isinstance(err, _Changed):
            return "changed"
        if err is not None:
            raise err
        return "done" if blocks.complete() else "single"

    def _hash_in_order(self, threads: list[threading.Thread]) -> None:
        """Hash the file from where the digests stand, as far as it is written."""
        blocks, digests = self.blocks, self.sink.digests
        pos = digests.count
        while pos < blocks.total:
            with blocks.cond:
                while (avail := blocks.contiguous(pos)) == pos:
                    if blocks.error is not None or not any(t.is_alive() for t in threads):
                        return
                    self.d.cancel.check()
                    blocks.cond.wait(0.2)
            digests.hash_fd(self.fd, pos, avail)
            pos = avail
        self.sink.offset = pos


class _Saver(threading.Thread):
    """Writes the sidecar every ``SAVE_EVERY`` seconds while blocks finish, and once more
    when the transfer stops short, off the workers' and the hash's path (a complete file
    needs no record: it is verified and placed next)."""

    def __init__(self, blocks: Blocks, save: Callable[[list[int]], None]) -> None:
        super().__init__(name="ohpub-range-saver", daemon=True)
        self.blocks, self.save, self.saved = blocks, save, blocks.changes

    def run(self) -> None:
        blocks = self.blocks
        try:
            while True:
                stopped = blocks.ended.wait(SAVE_EVERY)
                changes, complete = blocks.changes, blocks.complete()
                if changes != self.saved and not (stopped and complete):
                    self.saved = changes
                    self.save(blocks.done_list())
                if stopped:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            blocks.stop(exc)


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


def _at(answer: Answer) -> int:
    """The offset an open answer's body goes on at."""
    return answer.first + answer.consumed


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
    size: int | None = None,
) -> Downloaded:
    """Finish ``job`` as parallel ranges: from ``first``, the open first stream, read and
    hashed up to the sink's offset; or (``done``, ``size``) from a previous run's blocks."""
    total = job.total or 0
    size = size or block_size(total, d.config.range_size)
    prefix = sink.offset if first is not None else 0
    blocks = Blocks(total, size, done or set(), d.width, prefix)
    if first is None:
        sink.digests.reset()
    save = _saver(job, total, size)
    try:
        try:
            os.ftruncate(sink.fd, total)
        except OSError as exc:
            raise DiskError(exc) from exc
        save(blocks.done_list())
    except BaseException:
        if first is not None:
            first.close()
        raise
    log.debug(
        "file %s: %d bytes in ranges over up to %d connections (blocks of %d, %d done)",
        job.f.id,
        total,
        d.width,
        size,
        len(blocks.done),
    )
    outcome = Ranged(d, job, sink, blocks).run(first, save)
    return _after(d, job, sink, blocks, outcome)


def _after(d: Lanes, job: Job, sink: FileSink, blocks: Blocks, outcome: str) -> Downloaded:
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
    with blocks.cond:
        keep = blocks.contiguous(0) if outcome == "single" else 0
        written = blocks.written
    dropped = written - keep
    reused_dropped = max(0, job.reused - keep)  # a resumed prefix past ``keep`` goes too
    job.reuse(-reused_dropped)
    job.progress(-(dropped - reused_dropped))
    if job.meta_path is not None:
        # the done list no longer describes the partial
        tree.remove_within(job.meta_path.root, job.meta_path.rel)
    if outcome == "single" and job.etag:
        if job.meta_path is not None:
            save_meta(job.meta_path, job.f.id, job.etag, blocks.total)
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
    """Continue a parallel transfer a previous run left (its sidecar lists done blocks);
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
    done_blocks = {k for k in done if 0 <= k * size < total}
    already = sum(min(total, (k + 1) * size) - k * size for k in done_blocks)
    job.reuse(already)
    sink.offset = 0
    return run_ranged(d, job, sink, None, done_blocks, size)


__all__ = ["Blocks", "Ranged", "Span", "resume_ranged", "run_ranged"]
