"""The byte path: reusable buffers filled straight from the socket, digests, writes.

- Bodies are read with ``readinto`` on the raw ``http.client`` response under requests and
  urllib3 (content decoding off: a ``.gz`` with ``Content-Encoding: gzip`` is stored as
  served), one socket read at a time straight into a reusable 1 MiB buffer, which is
  written and hashed once it is full or nothing more has arrived: over TLS a record of
  16 KiB costs one small C call, not one trip through the whole sink, and a busy reader
  gets full buffers. Bytes read before a reset or a stall are kept.
- ``Digests``: sha256 and md5 of one byte sequence, each computed once, fed in order from
  a small ring of buffers, inline or on one helper thread (``threaded``).
- ``Writeback``: starts the kernel's writeback every few MiB (``sync_file_range``), so
  the final fsync of a big file is short.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import queue
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

BUFFER = 1024 * 1024
"""One read: large enough that per-call costs vanish, small enough to stay in cache."""
WRITEBACK_EVERY = 8 * 1024 * 1024
THREADED_DIGESTS = True
"""md5 on a helper thread, sha256 inline: the two hashes run on two cores (hashlib releases
the GIL on large buffers) and md5, the slower one (645 MiB/s here against sha256's 1,652),
no longer adds to the reading thread's time. Measured on this 2-core machine (2026-12-02,
one uncapped 400 MiB ``ohpub fetch`` over loopback HTTP, one stream, end to end, quiet
machine): inline 128-245 MiB/s (median 228), both hashes on the helper 211-283 (250), md5
alone on the helper 188-312 (291). Under heavy load (load average 8-14) inline did better
(96-125 against 82-106 MiB/s for both on the helper); a user's machine is not the loaded
CI box, so the split wins."""


def read_into(resp: requests.Response, view: memoryview) -> int:
    """Read from the body into ``view`` (raw bytes, never decoded); 0 at the end of the body."""
    fp: Any = getattr(resp.raw, "_fp", None)
    readinto = getattr(fp, "readinto", None)
    if readinto is not None:
        return int(readinto(view))
    data = resp.raw.read(len(view), decode_content=False)  # a raw without http.client under it
    view[: len(data)] = data
    return len(data)


@dataclass
class Filled:
    """What one ``fill`` got: bytes, and whether the body ended or an error stopped it."""

    n: int
    ended: bool = False
    error: BaseException | None = None


def fill(resp: requests.Response, view: memoryview) -> Filled:
    """Fill ``view`` from the body, as far as bytes have arrived. The bytes read before an
    error are kept, so a connection reset loses nothing that arrived."""
    from ohpub.remote.http import TRANSPORT_ERRORS

    fp: Any = getattr(resp.raw, "_fp", None)
    sock_file: Any = getattr(fp, "fp", None)
    fast = (
        isinstance(getattr(fp, "length", None), int)
        and getattr(fp, "chunked", True) is False
        and hasattr(sock_file, "readinto1")
    )
    sock = getattr(getattr(sock_file, "raw", None), "_sock", None) if fast else None
    filled = 0
    try:
        while filled < len(view):
            if filled and sock is not None and not _ready(sock):
                break  # nothing more has arrived: hand on what has (a stall keeps nothing)
            if not fast:
                n = read_into(resp, view[filled:])
            elif fp.length:
                # One socket read (one TLS record, or what loopback has), straight into the
                # buffer; http.client's own count of the body is kept in step.
                n = sock_file.readinto1(view[filled : filled + min(len(view) - filled, fp.length)])
                fp.length -= n
                if not fp.length:
                    fp.readinto(_EMPTY)  # http.client closes its side of a finished body
            else:
                n = 0
            if not n:
                return Filled(filled, ended=True)
            filled += n
    except TRANSPORT_ERRORS as exc:
        return Filled(filled, error=exc)
    return Filled(filled)


_EMPTY = memoryview(bytearray(0))


def _ready(sock: Any) -> bool:
    """Would a read return at once? (TLS: decrypted bytes pending, or bytes on the socket.)"""
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(readable)


def finish_body(resp: requests.Response) -> None:
    """The body was read to its end: give the connection back to the pool for reuse
    (reads that bypass urllib3 leave it thinking the body is unread)."""
    fp: Any = getattr(resp.raw, "_fp", None)
    isclosed = getattr(fp, "isclosed", None)
    if isclosed is not None and isclosed():
        with contextlib.suppress(Exception):
            resp.raw.release_conn()


class Digests:
    """sha256 and md5 of one byte sequence, fed in order through ``buffer``/``consume``.

    ``buffer()`` lends a buffer to fill; ``consume(n)`` hashes its first ``n`` bytes: sha256
    at once, md5 on the helper thread, which then returns the buffer to the ring (inline
    both when not ``threaded``). hashlib releases the GIL on large buffers, so the helper
    hashes beside the reads.
    """

    RING = 4

    def __init__(self, *, threaded: bool | None = None) -> None:
        threaded = THREADED_DIGESTS if threaded is None else threaded
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5()
        self.count = 0
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(self.RING if threaded else 1):
            self._free.put(bytearray(BUFFER))
        self._threaded = threaded
        self._work: queue.SimpleQueue[tuple[bytearray, int, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0
        self._current: bytearray | None = None

    def buffer(self) -> memoryview:
        if self._current is None:
            self._current = self._free.get()
        return memoryview(self._current)

    def consume(self, n: int, start: int = 0) -> None:
        """Hash bytes ``[start, n)`` of the lent buffer and take it back."""
        buf, self._current = self._current, None
        if buf is None:
            raise RuntimeError("Digests.consume() without buffer()")
        self.count += n - start
        if not self._threaded:
            self._hash(buf, start, n)
            self._free.put(buf)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ohpub-hash", daemon=True)
            self._thread.start()
        self.sha256.update(memoryview(buf)[start:n])  # here; md5 on the helper, in order
        with self._idle:
            self._pending += 1
        self._work.put((buf, start, n))

    def _hash(self, buf: bytearray, start: int, n: int) -> None:
        view = memoryview(buf)[start:n]
        self.sha256.update(view)
        self.md5.update(view)

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            buf, start, n = item
            self.md5.update(memoryview(buf)[start:n])
            self._free.put(buf)
            with self._idle:
                self._pending -= 1
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
            view = self.buffer()[: min(BUFFER, end - pos)]
            n = _pread_into(fd, view, pos)
            if n <= 0:
                raise OSError(f"file ended at byte {pos} of {end}")
            self.consume(n)
            pos += n

    def close(self) -> None:
        if self._thread is not None:
            self.drain()
            self._work.put(None)
            self._thread.join()
            self._thread = None


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)


def _sync_file_range() -> Callable[[int, int, int], None] | None:
    """libc's sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE), when there is one."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int

    def start(fd: int, offset: int, nbytes: int) -> None:
        fn(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE: start writeback, do not wait

    return start


_START_WRITEBACK = _sync_file_range()


class Writeback:
    """Start writeback of each ``WRITEBACK_EVERY`` bytes written, so fsync finds little."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._unsynced = 0
        self._lock = threading.Lock()

    def wrote(self, offset: int, nbytes: int) -> None:
        if _START_WRITEBACK is None:
            return
        with self._lock:
            self._unsynced += nbytes
            if self._unsynced < WRITEBACK_EVERY:
                return
            self._unsynced = 0
        _START_WRITEBACK(self.fd, max(0, offset + nbytes - WRITEBACK_EVERY), WRITEBACK_EVERY)


def pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    """Write all of ``view`` at ``offset`` (os.pwrite may write less than asked)."""
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


__all__ = ["BUFFER", "Digests", "Writeback", "finish_body", "pwrite_all", "read_into"]
