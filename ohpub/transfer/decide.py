"""One stream or ranges: decided by measuring the first stream, not by the file's size.

One connection is as fast as this machine when its reader never waits for bytes: more
connections then add only thread hand-offs and the read-back of the in-order hash (an
uncapped 400 MiB file over loopback: 161-237 MiB/s in eight ranges, 310-352 in one
stream). They pay when the stream is held back on the way (a per-connection cap, a long
round trip that bounds TCP's window): its reader then spends most of its time waiting.

``SplitProbe`` watches the first stream's fills: bytes, wall time, and the reader
thread's CPU time inside each fill (wall minus CPU inside a fill is time spent waiting
for bytes to arrive; everything outside the fills, the writes and hashes, is work):

- ``rate`` = bytes / wall: what this one stream delivers;
- ``limit`` = bytes / (wall - waited): what one reader could take in if bytes were always
  there (the whole pipeline's cost per byte);
- over ``width`` connections: ``min(width x rate, limit)`` (each as fast as this one,
  never faster than the pipeline).

It splits when the rest would take at most half as long that way, saving at least
``SAVES`` seconds, and the reader waited at least half the time; otherwise the stream
goes on and the probe looks again after twice as long (a link that slows down later).
On a machine busier than its cores (load average at least the CPU count) a thread that
is ready but not running looks like one waiting for bytes, so the probe then asks for
``WAITED_BUSY`` (a capped stream waits 90% or more of the time either way). Each look is
logged at DEBUG (``--verbose``).
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("ohpub")

FIRST_LOOK = 0.1
"""Seconds of the first stream before the first look (then 2x, 4x, ...)."""
WAITED = 0.5
"""Split only if the reader waited for bytes at least this share of the time ..."""
WAITED_BUSY = 0.8
"""... or this share, when the machine is busier than its cores."""
GAIN = 2.0
"""... and the rest would take at most 1 / GAIN of its time on one stream ..."""
SAVES = 0.5
"""... and that saves at least this many seconds."""
LOOKS = 6
"""The probe stops looking after this many looks (0.1 s to 3.2 s of the stream)."""
MAX_BLOCKS = 2048
"""Blocks of one file at most (a bigger file gets bigger blocks): the sidecar stays small."""


def block_size(total: int, smallest: int) -> int:
    """The block of a parallel transfer of ``total`` bytes: ``smallest``
    (``Config.range_size``), or larger so that the file has at most ``MAX_BLOCKS``."""
    need = -(-total // MAX_BLOCKS)
    if need <= smallest:
        return smallest
    mib = 1024 * 1024
    return -(-need // mib) * mib


class SplitProbe:
    """Measures one stream (``fill_started``/``filled``) and says when to split."""

    def __init__(self, file_id: int, remaining: int, width: int) -> None:
        self.file_id = file_id
        self.remaining = remaining
        self.width = width
        self.bytes = 0
        self.waited = 0.0
        self.started: float | None = None
        self.next_look = FIRST_LOOK
        self.looks = 0
        self._t0 = 0.0
        self._cpu0 = 0.0
        self.needed = WAITED_BUSY if _busy() else WAITED

    @property
    def watching(self) -> bool:
        return self.looks < LOOKS

    def fill_started(self) -> None:
        self._t0 = time.perf_counter()
        self._cpu0 = time.thread_time()
        if self.started is None:
            self.started = self._t0

    def filled(self, n: int) -> None:
        """One fill brought ``n`` bytes (before they are written and hashed)."""
        wall = time.perf_counter() - self._t0
        cpu = time.thread_time() - self._cpu0
        self.waited += max(0.0, wall - cpu)
        self.bytes += n
        self.remaining -= n

    def split(self) -> bool:
        """Whether the rest should go over several connections (checked between fills)."""
        if self.started is None or not self.watching:
            return False
        wall = time.perf_counter() - self.started
        if wall < self.next_look or self.bytes <= 0:
            return False
        self.looks += 1
        self.next_look = wall * 2
        rate = self.bytes / wall
        waited = min(self.waited / wall, 1.0)
        busy = wall - min(self.waited, wall)
        limit = self.bytes / busy if busy > 0 else float("inf")
        one = self.remaining / rate
        many = self.remaining / min(self.width * rate, limit)
        verdict = waited >= self.needed and many * GAIN <= one and one - many >= SAVES
        log.debug(
            "file %s: one stream at %.1f MB/s, waiting for bytes %.0f%% of the time "
            "(%.0f%% needed); the rest (%.0f MB) in about %.1f s over %d connections "
            "against %.1f s: %s",
            self.file_id,
            rate / 1e6,
            waited * 100,
            self.needed * 100,
            self.remaining / 1e6,
            many,
            self.width,
            one,
            "splitting into ranges" if verdict else "one stream",
        )
        return verdict


def _busy() -> bool:
    """Is the machine running more than it has cores for (1-minute load average)?"""
    try:
        return os.getloadavg()[0] >= (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return False


__all__ = ["MAX_BLOCKS", "SplitProbe", "block_size"]
