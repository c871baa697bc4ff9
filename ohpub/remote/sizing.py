"""Listing requests sized to the server's time limit, from what its answers took.

Each listed record costs the real Open Humans server about 8 ms (13-16 ms on a loaded
machine), the requests in flight share its cores, and its router answers HTTP 500 once a
request has run 30 s (reference section 6). So no fixed page size is right: 500 records
take 4 s on a quiet server and are past the limit at four in flight on a loaded one, and
a request that fills a gap of 4,440 records can never be answered. ``Sizer`` learns the
server's seconds per record from its answers and sizes every listing request (the pages
of the walk and the requests that fill its gaps alike) to finish in a third of
``Config.server_time_limit``:

- **Learning.** An exponentially weighted mean of seconds per record over the answered
  requests of at least ``MIN_LEARN`` records (a smaller one measures the round trip, not
  the records). The time runs from sending the request to its last byte, so it includes
  the sharing of the server's cores with the other requests in flight: the limit counts
  that too.
- **Sizing.** ``target / seconds_per_record`` records, at most the caller's bound (the
  walk's page size, ``Config.listing_max_records``) and the *ceiling*, at least 1. Before
  any answer, ``FIRST_RECORDS`` (4-8 s on the real server). The answers of requests that
  ran alone (no other listing request in flight) are also kept apart: a request that
  will run alone (a long gap's snapshot) is sized from those (``size(alone=True)``).
- **Trouble** (a timeout, a 5xx, a broken connection). The ceiling drops to half the
  failed request, so the same heavy request is never sent again unchanged; the listing
  asks for the failed range again in pieces of that size (``failed`` returns it); the
  estimate rises to what the failure shows when it took long. The ceiling doubles back
  with every answer inside the target.
- **Width (AIMD).** The listing requests in flight start at one (the first answer tells
  the count and the first speed), grow by one once as many answers in a row as are in
  flight came back inside the target (one step per round: the requests sized at one
  width then run at the next, within the target's margin), up to ``--api-concurrency``,
  and halve on trouble or on an answer that took more than two thirds of the limit. The
  listing reads ``allowed`` before each request it starts (``width``, and at most the
  largest request's records in flight in all: the answers wait parsed in memory).

One ``Sizer`` lives on the API client, so what one listing learned serves the next. Every
adjustment is logged at DEBUG (``--verbose``); ``summary()`` is the one line the listing
logs at INFO when it ends (the log file).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

log = logging.getLogger("ohpub")

TARGET_FRACTION = 1 / 3
"""Share of the server's limit one request is sized to: room for a server slower than
measured, and for more requests in flight than when it was measured."""
SLOW_FRACTION = 2 / 3
"""An answer slower than this share of the limit halves the requests in flight."""
FIRST_RECORDS = 500
"""Records of the first request, before any answer has been timed."""
MIN_LEARN = 20
"""Requests with fewer records do not teach the seconds per record."""
ALPHA = 0.5
"""Weight of the newest answer in the mean (a change of width shows within a round)."""


@dataclass
class Tally:
    """Listing requests answered and the records they brought: the one count of them, kept
    by the sizer (every answer it was told of) and by a listing's report (the answers the
    listing took, and of those the ones that filled gaps)."""

    requests: int = 0
    records: int = 0

    def add(self, records: int) -> None:
        """One more request answered, with ``records`` records."""
        self.requests += 1
        self.records += records


@dataclass
class SizerStats(Tally):
    """What the sizer saw (``ListingReport.sizing`` copies it per listing): the requests
    answered and their records (a ``Tally``), the time they took, the failures, and the
    range of widths."""

    seconds: float = 0.0
    """Time the answered requests took in all (from sending to the last byte)."""
    failures: int = 0
    """Requests that timed out or got a 5xx (each answered by smaller ones)."""
    width_low: int = 1
    width_high: int = 1


class Sizer:
    """Sizes listing requests and bounds how many run at once (see the module docstring).
    Thread-safe: the listing's fetch threads report to it."""

    def __init__(self, *, limit: float, max_records: int, max_width: int) -> None:
        self.limit = max(0.001, limit)
        self.target = self.limit * TARGET_FRACTION
        self.max_records = max(1, max_records)
        self.max_width = max(1, max_width)
        self._lock = threading.Lock()
        self._spr: float | None = None
        self._alone: float | None = None
        self._flight: dict[int, bool] = {}
        """Listing requests in flight: token -> shared (another ran beside it)."""
        self._tokens = 0
        self._ceiling = self.max_records
        self._width = 1
        self._quick = 0
        """Answers inside the target since the width last changed."""
        self._logged = (0, 0)
        self.stats = SizerStats()

    @property
    def width(self) -> int:
        """Listing requests that may be in flight now."""
        with self._lock:
            return self._width

    def allowed(self, bound: int | None = None) -> int:
        """Requests of ``size(bound)`` records that may be in flight now: ``width``, and no
        more records in all than the largest request holds (each answer waits parsed until
        the listing reaches it: memory, not the server, bounds that). On a fast server the
        walk then runs one large page at a time, which lets it align its pages."""
        with self._lock:
            return max(1, min(self._width, self.max_records // self._size(bound, False)))

    @property
    def seconds_per_record(self) -> float | None:
        with self._lock:
            return self._spr

    def size(self, bound: int | None = None, *, alone: bool = False) -> int:
        """Records for the next request, at most ``bound`` (default ``max_records``);
        ``alone``: for a request no other listing request will run beside."""
        with self._lock:
            return self._size(bound, alone)

    def start(self) -> int:
        """A listing request is being sent: a token for ``answered`` or ``failed``."""
        with self._lock:
            self._tokens += 1
            shared = bool(self._flight)
            for token in self._flight:
                self._flight[token] = True
            self._flight[self._tokens] = shared
            return self._tokens

    def gone(self, token: int) -> bool:
        """The request of ``token`` ended without an answer to learn from; True when it
        ran alone."""
        with self._lock:
            return not self._flight.pop(token, True)

    def answered(self, token: int, records: int, seconds: float) -> None:
        """A listing request of ``records`` records was answered in ``seconds``."""
        with self._lock:
            alone = not self._flight.pop(token, True)
            st = self.stats
            st.add(records)
            st.seconds += seconds
            if records >= MIN_LEARN:
                spr = seconds / records
                self._spr = _mean(self._spr, spr)
                if alone:
                    self._alone = _mean(self._alone, spr)
            if seconds <= self.target:
                self._ceiling = min(self.max_records, self._ceiling * 2)
                self._quick += 1
                if self._quick >= self._width:
                    self._set_width(self._width + 1, "answers are quick")
            elif seconds > self.limit * SLOW_FRACTION:
                self._set_width(self._width // 2, f"an answer took {seconds:.1f} s")
            else:
                self._quick = 0  # not quick: the round starts again
            self._log_size()

    def failed(self, token: int, records: int, seconds: float, reason: str) -> int:
        """A request of ``records`` records failed after ``seconds`` (a timeout, a 5xx):
        returns the size of the pieces its range is asked for again (at most half of it,
        at least 1)."""
        with self._lock:
            alone = not self._flight.pop(token, True)
            self.stats.failures += 1
            if records and seconds >= self.target:
                self._spr = max(self._spr or 0.0, seconds / records)
                if alone:
                    self._alone = max(self._alone or 0.0, seconds / records)
            self._ceiling = max(1, min(self._ceiling, records // 2))
            self._set_width(self._width // 2, reason)
            piece = max(1, min(self._size(None, alone), records // 2))
            log.debug(
                "listing: %s on a request of %d records after %.1f s; its range is asked "
                "for again in requests of at most %d records",
                reason,
                records,
                seconds,
                piece,
            )
            self._log_size()
            return piece

    def summary(self, before: SizerStats | None = None) -> str:
        """One line for the log file: what was learned and how requests were sized
        (counting from ``before``, what ``begin`` returned when the listing began)."""
        with self._lock:
            st, b = self.stats, before or SizerStats()
            answered, records = st.requests - b.requests, st.records - b.records
            failures = st.failures - b.failures
            spr = "not learned" if self._spr is None else f"{self._spr * 1000:.2f} ms"
            return (
                f"listing sizing: {answered} requests answered ({records} records, "
                f"{st.seconds - b.seconds:.1f} s), {spr} per record; requests sized to a "
                f"third of the {self.limit:g} s server limit: {self._size(None, False)} records "
                f"(bound {self.max_records}); {st.width_low}-{st.width_high} in flight; "
                f"{failures} timed out or failed and were asked again smaller"
            )

    def begin(self) -> SizerStats:
        """A listing starts: a copy of the counters for its ``summary``; the range of
        widths seen restarts from the current one."""
        with self._lock:
            s = self.stats
            s.width_low = s.width_high = self._width
            return SizerStats(s.requests, s.records, s.seconds, s.failures)

    # -- internals (lock held) ---------------------------------------------------------------

    def _size(self, bound: int | None, alone: bool) -> int:
        cap = min(self._ceiling, self.max_records if bound is None else max(1, bound))
        spr = self._alone if alone and self._alone is not None else self._spr
        if spr is None:
            n = FIRST_RECORDS
        elif spr <= 0:
            n = cap
        else:
            n = int(self.target / spr)
        return max(1, min(n, cap))

    def _set_width(self, width: int, why: str) -> None:
        width = max(1, min(self.max_width, width))
        self._quick = 0
        if width == self._width:
            return
        log.debug("listing: %d requests in flight (was %d): %s", width, self._width, why)
        self._width = width
        self.stats.width_low = min(self.stats.width_low, width)
        self.stats.width_high = max(self.stats.width_high, width)

    def _log_size(self) -> None:
        n = self._size(None, False)
        last, _ = self._logged
        if last and abs(n - last) * 4 < last:
            return
        self._logged = (n, self._width)
        spr = "?" if self._spr is None else f"{self._spr * 1000:.2f}"
        log.debug(
            "listing: %s ms per record learned; requests of up to %d records (a third of "
            "the %g s limit, bound %d)",
            spr,
            n,
            self.limit,
            min(self.max_records, self._ceiling),
        )


def _mean(old: float | None, new: float) -> float:
    return new if old is None else (1 - ALPHA) * old + ALPHA * new


__all__ = ["Sizer", "SizerStats", "Tally", "TARGET_FRACTION", "FIRST_RECORDS"]
