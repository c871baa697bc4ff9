"""The live progress display of ``ohpub mirror`` on stderr (``MirrorView``) and the
counts behind it (``MirrorCounts``), fed by the library's progress events."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

from ohpub.cli.render import (
    log_only,
    notice,
    print_error,
    print_warning,
    silence_stdout,
    write_jsonl,
)
from ohpub.cli.screen import SCREEN, LiveLines, rate_window
from ohpub.library import MirrorEvent
from ohpub.mirror.types import FileResult
from ohpub.model.records import DataFile
from ohpub.model.units import clock, human_bytes

log = logging.getLogger("ohpub")


_DONE_WORDS = (
    ("downloaded", "downloaded"),
    ("unchanged", "unchanged"),
    ("renamed", "renamed"),
    ("failed", "failed"),
    ("unavailable", "unavailable"),
    ("skipped", "skipped"),
)


class _InFlight:
    """Transfers really moving bytes, not workers waiting for a slot: a file counts from
    its first bytes (``progress`` from the thread that ``started`` it) to ``finished``.
    If bytes arrive from a thread that started nothing (ranges fetched by helper
    threads), files cannot be told apart, and every started file counts."""

    def __init__(self) -> None:
        self.threads: dict[int, int] = {}
        self.started: set[int] = set()
        self.flowing: set[int] = set()
        self.foreign = False

    def start(self, file_id: int) -> None:
        self.threads[threading.get_ident()] = file_id
        self.started.add(file_id)

    def bytes_seen(self) -> None:
        fid = self.threads.get(threading.get_ident())
        if fid is None:
            self.foreign = True
        else:
            self.flowing.add(fid)

    def finish(self, file_id: int) -> None:
        if self.threads.get(threading.get_ident()) == file_id:
            del self.threads[threading.get_ident()]
        self.started.discard(file_id)
        self.flowing.discard(file_id)

    def count(self) -> int:
        return len(self.started) if self.foreign else len(self.flowing)


class MirrorCounts:
    """What the mirror has told its watcher so far: enough for the bars and for an honest
    "interrupted" line. Times are ``time.monotonic()``."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.listed = 0
        self.expected: int | None = None
        self.listing_done = False
        self.by_status: dict[str, int] = {}
        self.bytes_done = 0
        self.bytes_announced = 0
        self.work_started: float | None = None
        self._flight = _InFlight()

    @property
    def in_flight(self) -> int:
        return self._flight.count()

    @property
    def done(self) -> int:
        return sum(n for s, n in self.by_status.items() if s != "deleted")

    @property
    def total(self) -> int | None:
        """Files in scope, once known (the listing ended, or its own count arrived)."""
        if self.listing_done:
            return max(self.listed, self.done)
        return self.expected

    def eta(self, now: float) -> float | None:
        """Seconds left at the average pace since work began; None until that pace means
        something (a few files done, a second or more of work, the total known)."""
        total, done = self.total, self.done
        if total is None or self.work_started is None or done < min(3, total):
            return None
        spent = now - self.work_started
        if spent < 1.0 or done == 0:
            return None
        return (total - done) * spent / done

    def interrupted_text(self) -> str:
        """``interrupted: 12 downloaded, 3 unchanged, 16 not done; a rerun resumes``."""
        got = self.by_status.get("downloaded", 0) + self.by_status.get("resumed", 0)
        parts = [f"{got} downloaded"]
        for status, word in _DONE_WORDS[1:]:
            if self.by_status.get(status):
                parts.append(f"{self.by_status[status]} {word}")
        total = self.total
        if total is not None:
            parts.append(f"{max(0, total - self.done)} not done")
        else:
            parts.append(f"listing stopped after {self.listed} files")
        return "interrupted: " + ", ".join(parts) + "; a rerun resumes"


class MirrorView:
    """The mirror's watcher: jsonl records on stdout; bars (terminal only), warnings and
    failures on stderr; every result in the log (DEBUG), failures as errors.

    The bars are two live lines (see ``ohpub.screen``), redrawn by a timer:

    ``listing: 1,200 of 4,000 files [00:07]`` while the listing runs, then
    ``files: 14/31  45% |█████      | [00:03, ETA 00:04]``, and beneath it
    ``bytes: 1.2 MB of 2.6 MB announced, 6.1 MB/s, 4 in flight``.

    A reader that goes away from stdout stops the records, not the mirror.
    """

    def __init__(
        self,
        *,
        fmt: str,
        quiet: bool,
        bars: bool,
        out: TextIO,
        announce_all: str | None = None,
    ) -> None:
        self.fmt = fmt
        self.quiet = quiet
        self.out = out
        self.counts = MirrorCounts()
        self.out_closed = False
        self._announce_all = announce_all
        """Set when no filter was given: the DEST, for a line saying what is coming."""
        self._lock = threading.Lock()
        self._rates: list[tuple[float, float]] = []
        self._live: LiveLines | None = None
        if bars and not quiet:
            self._live = LiveLines(sys.stderr, self._render)
            self._live.start()

    # -- events from the engine -----------------------------------------------------------

    def on_event(self, e: MirrorEvent) -> None:
        """The ``progress`` callback of ``ohpub.mirror``: each event to its method."""
        if e.kind == "result" and e.result is not None:
            self.result(e.result)
        elif e.kind in ("started", "finished") and e.file is not None:
            (self.started if e.kind == "started" else self.finished)(e.file)
        elif e.kind == "warning":
            self.warning(e.message or "")
        elif e.kind == "bytes":
            self.progress(e.count)
        elif e.kind in ("listed", "expected", "listing_done", "sized"):
            getattr(self, e.kind)(e.count)

    def listed(self, n: int) -> None:
        c = self.counts
        c.listed = n
        if c.expected is not None and n >= c.expected:
            c.listing_done = True

    def expected(self, n: int) -> None:
        first = self.counts.expected is None
        self.counts.expected = n
        if first and self._announce_all is not None:
            notice(
                f"ohpub: no filter given: mirroring all {n} public files into {self._announce_all}",
                quiet=self.quiet,
            )
            self._announce_all = None

    def listing_done(self, n: int) -> None:
        """Optional: the listing ended with ``n`` files in scope."""
        self.counts.listed = n
        self.counts.listing_done = True

    def sized(self, nbytes: int) -> None:
        """Optional: a transfer announced ``nbytes`` more to come (its Content-Length)."""
        with self._lock:
            self.counts.bytes_announced += nbytes

    def started(self, f: DataFile) -> None:
        with self._lock:
            c = self.counts
            c._flight.start(f.id)
            if c.work_started is None:
                c.work_started = time.monotonic()
        if self._announce_all is not None:
            notice(
                f"ohpub: no filter given: mirroring every public file into {self._announce_all}",
                quiet=self.quiet,
            )
            self._announce_all = None

    def finished(self, f: DataFile) -> None:
        with self._lock:
            self.counts._flight.finish(f.id)

    def progress(self, nbytes: int) -> None:
        with self._lock:
            self.counts.bytes_done += nbytes
            self.counts._flight.bytes_seen()

    def result(self, r: FileResult) -> None:
        with self._lock:
            c = self.counts
            c.by_status[r.status] = c.by_status.get(r.status, 0) + 1
            if c.work_started is None:
                c.work_started = time.monotonic()
            # Results follow the listing in the engine; one that reports them earlier
            # also calls listing_done() when the listing ends.
            c.listing_done = True
        if self.fmt == "jsonl" and not self.out_closed:
            self._record(r)
        log.debug("%s: %s", r.status, r.path or r.id)
        if r.status == "failed":  # without a path (a rejected record) the error names it
            text = f"{r.path}: {r.error}" if r.path else f"{r.error}"
            print_error(text, stderr=self.fmt != "jsonl")

    def _record(self, r: FileResult) -> None:
        """One jsonl record; when the reader has gone (``| head -1``), stop writing and
        let the mirror finish: its exit code stays the mirror's."""
        try:
            if self._live is not None and self.out.isatty():
                with SCREEN.above_bars():  # records and bars share one screen
                    write_jsonl(r.as_dict(), self.out)
            else:
                write_jsonl(r.as_dict(), self.out)
        except BrokenPipeError:
            self.out_closed = True
            silence_stdout()
            log_only("stdout closed by its reader: no more records; the mirror goes on")

    def warning(self, message: str) -> None:
        print_warning(message, quiet=self.quiet)

    def close(self) -> None:
        if self._live is not None:
            self._live.close()

    # -- the two lines --------------------------------------------------------------------

    def _render(self, width: int) -> list[str]:
        now = time.monotonic()
        with self._lock:
            c = self.counts
            first = self._files_line(c, now, width)
            rate = rate_window(self._rates, now, c.bytes_done)
            done = human_bytes(c.bytes_done)
            of = f" of {human_bytes(c.bytes_announced)}" if c.bytes_announced else ""
            tail = f", {human_bytes(rate)}/s, {c.in_flight} in flight"
            second = f"bytes: {done}{of}{' announced' if of else ''}{tail}"
            if len(second) >= width:  # a narrow terminal: the same facts, fewer words
                second = f"bytes: {done}{of}{tail}"
        return [first, second]

    @staticmethod
    def _files_line(c: MirrorCounts, now: float, width: int) -> str:
        elapsed = clock(now - c.t0)
        total = c.total
        if not c.listing_done:
            count = f"{c.listed} of {total} files" if total is not None else f"{c.listed} files"
            done = f", {c.done} done" if c.done else ""
            return f"listing: {count}{done} so far [{elapsed}]"
        eta = c.eta(now)
        tail = f" [{elapsed}, ETA {clock(eta) if eta is not None else '-'}]"
        count = f"{c.done}/{total}"
        frac = c.done / total if total else 1.0
        head = f"files: {count} {frac * 100:3.0f}% "
        room = width - 1 - len(head) - len(tail) - 2
        if room < 8:
            return head.rstrip() + tail
        fill = round(room * frac)
        return head + "|" + "█" * fill + " " * (room - fill) + "|" + tail
