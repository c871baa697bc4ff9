"""The live display of ``ohpub mirror`` on stderr (``MirrorView``, two tqdm bars) and the
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
from ohpub.cli.screen import BAR_CHARS, Bar, LiveBars, Nowhere, above_bars
from ohpub.library import MirrorEvent
from ohpub.mirror.types import FileResult
from ohpub.model.records import DataFile
from ohpub.model.units import clock, human_bytes, plural

log = logging.getLogger("ohpub")

IDLE = 2.0
"""Seconds without any news (a page, bytes, a result) before the display says it waits."""

_DONE_WORDS = (
    ("downloaded", "downloaded"),
    ("unchanged", "unchanged"),
    ("renamed", "renamed"),
    ("failed", "failed"),
    ("unavailable", "unavailable"),
    ("skipped", "skipped"),
)
_KEPT = ("unchanged", "renamed")
"""Results of files that needed no transfer (counted as done when they were planned)."""


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
        self.kept = 0
        """Files the plan found in place (no transfer), counted as done at once."""
        self.bytes_fetched = 0
        """Bytes this run fetched (every byte that arrived; only grows)."""
        self.bytes_dropped = 0
        """Fetched bytes a restart threw away."""
        self.bytes_reused = 0
        """Bytes resumed files already had from an earlier run (not fetched now)."""
        self.bytes_announced = 0
        self.work_started: float | None = None
        self.last_news = self.t0
        """When the last page, bytes or result arrived: the start of a wait."""
        self._flight = _InFlight()

    @property
    def in_flight(self) -> int:
        return self._flight.count()

    @property
    def bytes_there(self) -> int:
        """Bytes of the files in transfer or done: fetched (minus dropped) and reused."""
        return self.bytes_fetched - self.bytes_dropped + self.bytes_reused

    @property
    def done(self) -> int:
        """Files done: every result but deletions, the kept files counted from the plan."""
        others = sum(n for s, n in self.by_status.items() if s not in ("deleted", *_KEPT))
        return others + max(self.kept, sum(self.by_status.get(s, 0) for s in _KEPT))

    @property
    def total(self) -> int | None:
        """Files in scope, once known (the listing ended, or its own count arrived)."""
        if self.listing_done:
            return max(self.listed, self.done)
        return self.expected

    def eta(self, now: float) -> float | None:
        """Seconds left at the average pace since work began; None until that pace means
        something (a few files done, a second or more of work, the total known). Files
        kept from the plan cost nothing, so they do not make the pace."""
        total, done = self.total, self.done - self.kept
        if total is None or self.work_started is None or done < min(3, total - self.kept):
            return None
        spent = now - self.work_started
        if spent < 1.0 or done <= 0:
            return None
        return max(0.0, (total - self.done) * spent / done)

    def interrupted_text(self) -> str:
        """``interrupted: 12 downloaded, 3 unchanged, 16 not done; a rerun resumes``."""
        got = self.by_status.get("downloaded", 0) + self.by_status.get("resumed", 0)
        parts = [f"{got} downloaded"]
        shown = dict(self.by_status)
        shown["unchanged"] = max(shown.get("unchanged", 0), self.kept - shown.get("renamed", 0))
        for status, word in _DONE_WORDS[1:]:
            if shown.get(status):
                parts.append(f"{shown[status]} {word}")
        total = self.total
        if total is not None:
            parts.append(f"{max(0, total - self.done)} not done")
        else:
            parts.append(f"listing stopped after {plural(self.listed, 'file')}")
        return "interrupted: " + ", ".join(parts) + "; a rerun resumes"


class MirrorView:
    """The mirror's watcher: jsonl records on stdout; bars (terminal only), warnings and
    failures on stderr; every result in the log (DEBUG), failures as errors.

    The bars are two tqdm lines (see ``cli.screen``), redrawn by a timer:

    ``listing: 1,200 of 4,000 files so far [00:07]`` while the listing runs, then
    ``files: 14/31  45% |█████      | [00:03, ETA 00:04]``, and beneath it
    ``bytes: 1.2 MB of 2.6 MB announced, 6.1 MB/s, 4 in flight`` (this run's bytes: the
    rate never counts what resumed files already had). When nothing has arrived for
    ``IDLE`` seconds the second line says so, with a clock: ``waiting for the server
    [00:05]``.

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
        stream: TextIO | None = None,
        plain_every: float = 10.0,
    ) -> None:
        self.fmt = fmt
        self.quiet = quiet
        self.out = out
        self.counts = MirrorCounts()
        self.out_closed = False
        self._announce_all = announce_all
        """Set when no filter was given: the DEST, for a line saying what is coming."""
        self._lock = threading.Lock()
        self._live: LiveBars | None = None
        if bars and not quiet:
            self._live = LiveBars(
                stream or sys.stderr, 2, self._update, plain_every=plain_every
            )
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
        elif e.kind in ("listed", "expected", "listing_done", "sized", "kept", "reused"):
            getattr(self, e.kind)(e.count)

    def listed(self, n: int) -> None:
        with self._lock:
            c = self.counts
            c.listed = n
            c.last_news = time.monotonic()
            if c.expected is not None and n >= c.expected:
                c.listing_done = True

    def expected(self, n: int) -> None:
        with self._lock:
            self.counts.expected = n
        self._announce(f"all {n} public files")

    def _announce(self, what: str) -> None:
        """With no filter, say once (whichever thread comes first) that everything public
        is coming: the flag is taken under the lock, so no second thread says it again."""
        with self._lock:
            dest, self._announce_all = self._announce_all, None
        if dest is not None:
            notice(f"ohpub: no filter given: mirroring {what} into {dest}", quiet=self.quiet)

    def listing_done(self, n: int) -> None:
        """Optional: the listing ended with ``n`` files in scope."""
        with self._lock:
            self.counts.listed = n
            self.counts.listing_done = True

    def kept(self, n: int) -> None:
        """``n`` more files need no transfer: done as far as the bars are concerned."""
        with self._lock:
            self.counts.kept += n

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
        self._announce("every public file")

    def finished(self, f: DataFile) -> None:
        with self._lock:
            self.counts._flight.finish(f.id)

    def progress(self, nbytes: int) -> None:
        with self._lock:
            c = self.counts
            if nbytes >= 0:
                c.bytes_fetched += nbytes
                c.last_news = time.monotonic()
            else:
                c.bytes_dropped -= nbytes
            c._flight.bytes_seen()

    def reused(self, nbytes: int) -> None:
        with self._lock:
            self.counts.bytes_reused += nbytes

    def result(self, r: FileResult) -> None:
        with self._lock:
            c = self.counts
            c.by_status[r.status] = c.by_status.get(r.status, 0) + 1
            c.last_news = time.monotonic()
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
                with above_bars(self.out):  # records and bars share one screen
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

    def _update(self, bars: list[Bar], plain: bool) -> None:
        """Before each redraw (``LiveBars``): the counts into the two tqdm bars."""
        files, byts = bars
        now = time.monotonic()
        with self._lock:
            c = self.counts
            fetched = c.bytes_fetched
            self._files_bar(files, c, now, plain)
            rate = byts.format_dict.get("rate") or 0.0
            byts.bar_format = self._bytes_text(c, now, rate, byts.ncols or 0)
        delta = fetched - byts.n
        if delta > 0:
            byts.update(delta)  # tqdm's smoothed rate of this run's bytes

    @staticmethod
    def _files_bar(bar: Bar, c: MirrorCounts, now: float, plain: bool) -> None:
        total = c.total
        if not c.listing_done:
            count = f"{c.listed} of {total} files" if total is not None else f"{c.listed} files"
            done = f", {c.done} done" if c.done else ""
            bar.bar_format = f"listing: {count}{done} so far [{{elapsed}}]"
            return
        eta = c.eta(now)
        bar.fields["eta"] = Bar.format_interval(eta) if eta is not None else "-"
        bar.total, bar.n = total, c.done
        meter = " " if plain else " |{bar}| "
        bar.bar_format = "files: {n}/{total} {percentage:3.0f}%" + meter + "[{elapsed}, ETA {eta}]"

    @staticmethod
    def _bytes_text(c: MirrorCounts, now: float, rate: float, width: int) -> str:
        """The second line, in words (braces doubled for tqdm's format)."""
        there = human_bytes(c.bytes_there)
        of = f" of {human_bytes(c.bytes_announced)}" if c.bytes_announced else ""
        reused = f", {human_bytes(c.bytes_reused)} already there" if c.bytes_reused else ""
        idle = now - c.last_news
        if idle >= IDLE:
            tail = f", {c.in_flight} in flight, waiting for the server [{clock(idle)}]"
            short = f", waiting [{clock(idle)}]"
        else:
            tail = f", {human_bytes(rate)}/s, {c.in_flight} in flight"
            short = tail
        text = f"bytes: {there}{of}{' announced' if of else ''}{reused}{tail}"
        if width and len(text) >= width:  # a narrow terminal: the same facts, fewer words
            text = f"bytes: {there}{of}{short}"
        return text.replace("{", "{{").replace("}", "}}")

    def lines(self, width: int = 100) -> list[str]:
        """The two lines as a terminal ``width`` columns wide would show them now."""
        bars = [Bar(file=Nowhere(), ascii=BAR_CHARS, leave=False, delay=1e9) for _ in range(2)]
        try:
            for bar in bars:
                bar.ncols = width - 1
            self._update(bars, False)
            return [str(bar) for bar in bars]
        finally:
            for bar in bars:
                bar.close()



class WaitLine:
    """One live line for a command that talks to the server and shows nothing until it is
    done (``list`` collecting a table, ``list projects``, ``fetch``): so a slow or silent
    server is never a blank screen. After ``IDLE`` seconds without news the line says it
    waits, with a clock. Drawn only on a terminal, never with ``--quiet``, and not before
    ``delay`` (a quick answer shows nothing)."""

    def __init__(
        self,
        *,
        show: bool,
        words: str,
        stream: TextIO | None = None,
        delay: float = 0.5,
    ) -> None:
        self._lock = threading.Lock()
        self._live: LiveBars | None = None
        self.last_news = time.monotonic()
        self.words = words
        self.amount = 0
        """Bytes so far, when the line shows a rate (tqdm's, of this count)."""
        if show:
            self._live = LiveBars(stream or sys.stderr, 1, self._update, delay=delay)
            self._live.start()

    def news(self, words: str | None = None) -> None:
        """Something arrived (and, given, what the line says now)."""
        with self._lock:
            self.last_news = time.monotonic()
            if words is not None:
                self.words = words

    def _text(self, rate: float | None) -> str:
        return self.words

    def _update(self, bars: list[Bar], plain: bool) -> None:
        bar = bars[0]
        with self._lock:
            idle = time.monotonic() - self.last_news
            text = self._text(bar.format_dict.get("rate") if idle < IDLE else None)
            amount = self.amount
        tail = f", waiting for the server [{clock(idle)}]" if idle >= IDLE else " [{elapsed}]"
        bar.bar_format = text.replace("{", "{{").replace("}", "}}") + tail
        if amount > bar.n:
            bar.update(amount - bar.n)

    def close(self) -> None:
        if self._live is not None:
            self._live.close()
            self._live = None


class FetchLine(WaitLine):
    """``fetch`` on a terminal: ``fetch 57602983: 1.2 MB of 3.0 MB, 0.8 MB/s [00:03]``, one
    file at a time (the ``progress`` callback of ``ohpub.fetch_many`` and ``ohpub.stream``)."""

    def __init__(self, *, show: bool, first: int, stream: TextIO | None = None) -> None:
        self._name = f"fetch {first}"
        self._total = 0
        self._got = 0
        super().__init__(show=show, words=self._name, stream=stream)

    def on_event(self, e: MirrorEvent) -> None:
        with self._lock:
            if e.kind == "started" and e.file is not None:
                self._name, self._total, self._got = f"fetch {e.file.id}", 0, 0
            elif e.kind == "sized":
                self._total += e.count
            elif e.kind in ("bytes", "reused"):
                self._got += e.count
                if e.kind == "bytes" and e.count > 0:
                    self.amount += e.count
            else:
                return
            self.last_news = time.monotonic()

    def _text(self, rate: float | None) -> str:
        if not (self._got or self._total):
            return self._name
        of = f" of {human_bytes(self._total)}" if self._total else ""
        speed = f", {human_bytes(rate)}/s" if rate else ""
        return f"{self._name}: {human_bytes(self._got)}{of}{speed}"
