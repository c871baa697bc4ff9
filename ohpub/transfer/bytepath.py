"""The byte path: bodies read through urllib3's public API into large buffers, digests,
writes.

- ``BodyReader`` reads one body with the public ``urllib3.HTTPResponse`` API, content
  decoding off (a ``.gz`` with ``Content-Encoding: gzip`` is stored as served). Plain
  HTTP: ``read1``, one socket read per call, so every byte that arrived is kept when a
  reset or a stall ends the body. TLS: ``read(64 KiB)``: one call per 64 KiB instead of
  one per 16 KiB record (``read1`` over TLS costs about 0.9 ms more CPU per MiB here, in
  urllib3's per-call layers); a reset loses at most the piece being read.
- ``fill`` copies the pieces into one 1 MiB buffer, which is then written and hashed
  whole: one ``pwrite`` and one hash call per MiB, not one per socket read or TLS record.
  Over plain HTTP a short read means the socket had no more, and the buffer is handed on
  at once (the bytes before a stall reach the disk; a busy reader gets full buffers);
  over TLS the buffer is handed on when full, or every ``FLUSH_AFTER`` seconds.
- ``Digests``: sha256 and md5 of one byte sequence, each computed once. A small body is
  hashed inline in one buffer of its own size; a big one through a small ring of 1 MiB
  buffers, allocated as needed, each hash on a helper thread of its own (hashlib releases
  the GIL on large buffers, so the hashes run beside the reads on other cores, off the
  reading thread's path).
- ``Writeback``: starts the kernel's writeback every few MiB (``sync_file_range``), so
  the final fsync of a big file is short.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ohpub.remote import http

BUFFER = 1024 * 1024
"""One write and one hash call: large enough that per-call costs vanish."""
PIECE = 128 * 1024
"""Most one ``read1`` asks for: what a socket read returns on a fast link, and small enough
that glibc serves it from the heap (a 1 MiB ask, returned as a 16 KiB record, costs an
mmap and an munmap per call)."""
TLS_PIECE = 64 * 1024
"""One ``read`` over TLS: four records per call."""
FLUSH_AFTER = 0.25
"""A slow body's buffer is handed on after this many seconds, full or not (progress)."""
WRITEBACK_EVERY = 8 * 1024 * 1024
INLINE_UP_TO = 8 * 1024 * 1024
"""Bodies up to this size are hashed inline in one buffer (no helper thread, no ring)."""
HELPERS = 2
"""Hash threads of a big body: 2, one per hash (the reading thread only reads and writes),
or 1 (md5 there, sha256 on the reading thread). See benchmarks/RESULTS.md."""
SMALLEST_BUFFER = 16 * 1024


@dataclass
class Filled:
    """What one ``fill`` got: bytes, and whether the body ended or an error stopped it."""

    n: int
    ended: bool = False
    error: BaseException | None = None


class BodyReader:
    """One response body, read raw through urllib3's public API (see the module text)."""

    def __init__(self, resp: Any) -> None:
        self.raw = resp.raw
        self.tls = str(getattr(resp, "url", "") or "").startswith("https:")

    def fill(self, view: memoryview) -> Filled:
        """Fill ``view`` as far as the body allows within ``FLUSH_AFTER`` seconds; the bytes
        read before an error are kept (and reported with it)."""
        raw, size, filled = self.raw, len(view), 0
        deadline = time.monotonic() + FLUSH_AFTER
        try:
            while filled < size:
                ask = min(size - filled, TLS_PIECE if self.tls else PIECE)
                if self.tls:
                    data = raw.read(ask, decode_content=False)
                else:
                    data = raw.read1(ask, decode_content=False)
                if not data:
                    return Filled(filled, ended=True)
                n = len(data)
                view[filled : filled + n] = data
                filled += n
                if not self.tls and n < ask:
                    break  # the socket had no more: hand on what arrived (a stall keeps nothing)
                if filled < size and time.monotonic() >= deadline:
                    break
        except http.TRANSPORT_ERRORS as exc:
            return Filled(filled, error=exc)
        return Filled(filled)


def finish_body(resp: Any) -> None:
    """The body was read to its end: make sure the connection is back in the pool for the
    next request (urllib3 does it when its response closes; this is the public spelling)."""
    raw = resp.raw
    with contextlib.suppress(Exception):
        if raw.isclosed():
            raw.release_conn()


class Digests:
    """sha256 and md5 of one byte sequence, fed in order through ``buffer``/``consume``.

    ``buffer()`` lends a buffer to fill; ``consume(n)`` hashes its first ``n`` bytes and
    takes it back. ``expect(nbytes)``, told the size before the first buffer, keeps a small
    body inline in one buffer of its size; a big one goes to ``HELPERS`` helper threads
    (with 1: md5 there, sha256 at once; with 2: each hash on a thread of its own, so the
    reading thread only reads and writes), and a buffer returns to the ring when every
    helper is done with it.
    """

    RING = 4

    def __init__(self, *, helpers: int | None = None) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5()
        self.count = 0
        self.helpers = HELPERS if helpers is None else helpers
        self._size = BUFFER
        self._allocated = 0
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._queues: list[queue.SimpleQueue[list[Any] | None]] = []
        self._threads: list[threading.Thread] = []
        self._idle = threading.Condition()
        self._pending = 0
        self._current: bytearray | None = None

    def expect(self, nbytes: int | None) -> None:
        """Size the buffers for a body of ``nbytes`` (None: unknown, taken as big)."""
        if self._allocated or nbytes is None or nbytes > INLINE_UP_TO:
            return
        self.helpers = 0
        self._size = max(SMALLEST_BUFFER, min(BUFFER, nbytes))

    def buffer(self) -> memoryview:
        if self._current is None:
            self._current = self._take()
        return memoryview(self._current)

    def _take(self) -> bytearray:
        with contextlib.suppress(queue.Empty):
            return self._free.get_nowait()
        if self._allocated < (self.RING if self.helpers else 1):
            self._allocated += 1
            return bytearray(self._size)
        return self._free.get()  # every buffer is with the helpers: wait for one

    def consume(self, n: int, start: int = 0) -> None:
        """Hash bytes ``[start, n)`` of the lent buffer and take it back."""
        buf, self._current = self._current, None
        if buf is None:
            raise RuntimeError("Digests.consume() without buffer()")
        self.count += n - start
        if not self.helpers:
            view = memoryview(buf)[start:n]
            self.sha256.update(view)
            self.md5.update(view)
            self._free.put(buf)
            return
        if not self._threads:
            self._start_helpers()
        if self.helpers == 1:
            self.sha256.update(memoryview(buf)[start:n])
        item = [buf, start, n, len(self._queues)]
        with self._idle:
            self._pending += 1
        for q in self._queues:
            q.put(item)

    def _start_helpers(self) -> None:
        names = ["md5"] if self.helpers == 1 else ["sha256", "md5"]
        for name in names:
            q: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()
            t = threading.Thread(target=self._run, args=(q, name), name=f"ohpub-{name}")
            t.daemon = True
            self._queues.append(q)
            self._threads.append(t)
            t.start()

    def _run(self, q: queue.SimpleQueue[list[Any] | None], name: str) -> None:
        while (item := q.get()) is not None:
            buf, start, n, _ = item
            getattr(self, name).update(memoryview(buf)[start:n])
            with self._idle:
                item[3] -= 1
                if item[3]:
                    continue
                self._free.put(buf)
                self._pending -= 1
                if not self._pending:
                    self._idle.notify_all()

    def drain(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0)

    def hexdigests(self) -> tuple[str, str]:
        """(sha256, md5) of everything consumed."""
        self.drain()
        return self.sha256.hexdigest(), self.md5.hexdigest()

    def reset(self) -> None:
        self.drain()
        self.sha256, self.md5, self.count = hashlib.sha256(), hashlib.md5(), 0

    def hash_fd(self, fd: int, start: int, end: int) -> None:
        """Feed the bytes ``[start, end)`` of a file (a resumed prefix, or ranges on disk)."""
        pos = start
        while pos < end:
            view = self.buffer()
            view = view[: min(len(view), end - pos)]
            n = _pread_into(fd, view, pos)
            if n <= 0:
                raise OSError(f"file ended at byte {pos} of {end}")
            self.consume(n)
            pos += n

    def close(self) -> None:
        if self._threads:
            self.drain()
            for q in self._queues:
                q.put(None)
            for t in self._threads:
                t.join()
            self._queues, self._threads = [], []


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)


_UNSET: Any = object()
_start_writeback: Callable[[int, int, int], None] | None = _UNSET


def _sync_file_range() -> Callable[[int, int, int], None] | None:
    """libc's sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE), when there is one
    (looked up in the running process on first use: no ``ldconfig`` at import time)."""
    global _start_writeback
    if _start_writeback is _UNSET:
        import ctypes

        _start_writeback = None
        try:
            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
        except (OSError, AttributeError, TypeError):
            return None
        fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        fn.restype = ctypes.c_int

        def start(fd: int, offset: int, nbytes: int) -> None:
            fn(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE: start writeback, do not wait

        _start_writeback = start
    return _start_writeback


class Writeback:
    """Start the writeback of a file's dirty pages every ``WRITEBACK_EVERY`` bytes written,
    so the final fsync finds little. Shared by every writer of one file (the ranges of a
    parallel transfer): it starts the writeback of the whole file, wherever the bytes went."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._unsynced = 0
        self._lock = threading.Lock()

    def wrote(self, nbytes: int) -> None:
        with self._lock:
            self._unsynced += nbytes
            if self._unsynced < WRITEBACK_EVERY:
                return
            self._unsynced = 0
        start = _sync_file_range()
        if start is not None:
            start(self.fd, 0, 0)  # 0 bytes: to the end of the file


def pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    """Write all of ``view`` at ``offset`` (os.pwrite may write less than asked)."""
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


__all__ = [
    "BUFFER",
    "BodyReader",
    "Digests",
    "Filled",
    "Writeback",
    "finish_body",
    "pwrite_all",
]
