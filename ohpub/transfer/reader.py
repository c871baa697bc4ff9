"""One file's bytes as a readable stream (``ohpub.open``), through the one downloader.

The transfer is ``Downloader.to_stream`` (the retries, the resume after a reset, the
length and MD5 checks of every other download) run on a thread of its own, writing into a
bounded queue that the reader empties: memory stays at ``DEPTH`` buffers whatever the
file's size, and a reader that stops reading stops the transfer (its next write waits).
What the transfer raises reaches the reader in order, after the bytes that came before
it: a checksum that fails raises ``IntegrityError`` (``ChecksumError``) at the end of the
stream. Closing the stream early cancels the transfer's token, which ends it at once.
"""

from __future__ import annotations

import io
import queue
import threading
from typing import Any

from ohpub.model.cancel import Cancelled, CancelToken
from ohpub.model.records import DataFile
from ohpub.transfer.downloader import Downloader

DEPTH = 4
"""Buffers (of up to 1 MiB each) the transfer may run ahead of the reader."""


class _End:
    """The transfer finished: nothing after this."""


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Pipe:
    """The transfer's output: each write is copied into the bounded queue."""

    def __init__(self, q: queue.Queue[Any], cancel: CancelToken) -> None:
        self._q = q
        self._cancel = cancel

    def write(self, data: Any) -> int:
        chunk = bytes(data)  # the transfer reuses its buffer
        if chunk:
            _put(self._q, chunk, self._cancel)
        return len(chunk)

    def flush(self) -> None:
        return None


def _put(q: queue.Queue[Any], item: object, cancel: CancelToken) -> None:
    while True:
        cancel.check()
        try:
            q.put(item, timeout=0.05)
            return
        except queue.Full:
            continue


class StreamReader(io.RawIOBase):
    """The stored bytes of ``f``, read as they arrive (wrap it in ``io.BufferedReader``).

    ``downloader`` must work under a token of its own (``ApiClient.scoped``): closing
    the reader cancels it."""

    def __init__(self, downloader: Downloader, f: DataFile) -> None:
        super().__init__()
        self._cancel = downloader.cancel
        self._q: queue.Queue[Any] = queue.Queue(maxsize=DEPTH)
        self._pending = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(
            target=self._transfer, args=(downloader, f), name="ohpub-open", daemon=True
        )
        self._thread.start()

    def _transfer(self, downloader: Downloader, f: DataFile) -> None:
        try:
            downloader.to_stream(f, _Pipe(self._q, self._cancel))  # type: ignore[arg-type]
            item: object = _End()
        except Cancelled:
            return  # the reader went away
        except BaseException as exc:  # noqa: BLE001 - raised where the reader reads
            item = _Failed(exc)
        try:
            _put(self._q, item, self._cancel)
        except Cancelled:
            return

    def wait_ready(self) -> None:
        """Block until the first bytes (or the end, or the failure) arrived; raise a failure
        that came first, so that opening a file storage refuses fails at once."""
        if not self._pending and not self._done:
            self._next()

    def _next(self) -> None:
        item = self._cancel.get(self._q)
        if isinstance(item, _Failed):
            self._done = True
            raise item.exc
        if isinstance(item, _End):
            self._done = True
            return
        self._pending = memoryview(item)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._pending:
            if self._done:
                return 0
            self._next()
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        """Stop the transfer (if it still runs) and let its thread go."""
        if not self.closed:
            self._cancel.cancel()
            self._thread.join(timeout=1.0)
        super().close()


__all__ = ["StreamReader", "DEPTH"]
