"""Cuts and segments of a listing ordered by username only (``remote.listing`` uses them).

The username at each position of a listing is the same in every request (the order is
by username); only the order of one member's files changes. A *cut* is the place between
two positions whose usernames are both known and differ: the set of files on either side
of it is the same in every request. The positions between two consecutive cuts form a
*segment*, and a segment is complete when

- one request covered it from cut to cut (that request returned exactly its files), or
- the requests that touched it brought as many distinct ids as it has positions.

Every other segment is a *gap*: some of its files may not have come back. A position
whose username is unknown (a hidden membership lists as a null user, a rejected item has
none) is never a cut, so it only widens the segment around it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def differ(a: str | None, b: str | None) -> bool:
    """Two positions whose known usernames differ: a cut between them."""
    return a is not None and b is not None and a != b


def last_cut(offset: int, names: Sequence[str | None]) -> int | None:
    """The last cut inside a page of ``names`` at ``offset`` (None: there is none)."""
    for i in range(len(names) - 1, 0, -1):
        if differ(names[i - 1], names[i]):
            return offset + i
    return None


@dataclass
class Segment:
    """Positions ``start``-``end`` between two cuts, and what the requests showed of it."""

    start: int
    end: int
    names: set[str] = field(default_factory=set)
    """The usernames seen at its positions."""
    projects: set[int] = field(default_factory=set)
    hidden: bool = False
    """A position showed no username (a hidden membership or a rejected item)."""
    unknown: bool = False
    """A position showed no usable id, or was never seen: the ids cannot be counted."""
    ids: set[int] | None = None
    """The distinct ids seen at its positions (kept only for long gaps)."""
    seen: int = 0
    """How many distinct ids were seen."""

    @property
    def length(self) -> int:
        return self.end - self.start


class SegmentTracker:
    """The segments of one pass, fed page by page in order of offset.

    A page may start before the end of the one before it (an *aligned* page asks for the
    open segment again from its first position, so that one request covers it) but never
    after it. Holds only the open segment's ids, so its memory is one segment, not the
    listing. ``gaps`` collects the segments that need more requests; ``names`` the
    usernames of every complete segment (each member's block lies inside one segment);
    ``keep_ids(length)`` says whether a gap keeps its ids for the requests that fill it.
    """

    def __init__(self, keep_ids: Callable[[int], bool] = lambda n: False) -> None:
        self.frontier = 0
        """Positions below this one have been seen."""
        self.gaps: list[Segment] = []
        self.names: set[str] = set()
        self.verified = 0
        """Segments spread over several requests whose ids all came back."""
        self.keep_ids = keep_ids
        self._open = Segment(0, 0)
        self._ids: set[int] = set()
        self._cover = False
        self._last: str | None = None
        self._empty = True

    @property
    def start(self) -> int:
        """Where the open segment starts (a cut)."""
        return self._open.start

    def add(
        self,
        offset: int,
        names: Sequence[str | None],
        ids: Sequence[int | None],
        projects: Sequence[int | None] | None = None,
    ) -> None:
        """One page: the username (None: unknown), id (None: unusable) and project of
        each of its positions, from ``offset``."""
        if not names:
            return
        if projects is None:
            projects = [None] * len(names)
        if offset > self.frontier:  # a hole (a short page before): nothing across it counts
            self._open.unknown = True
            self._last, self.frontier = None, offset
        if offset == self.frontier and not self._empty and differ(self._last, names[0]):
            self._close(offset)
        self._cover = offset <= self._open.start
        for i, (name, fid, project) in enumerate(zip(names, ids, projects, strict=True)):
            pos = offset + i
            if pos < self._open.start:
                continue  # re-read of a segment already closed
            if pos >= self.frontier and i and pos > self._open.start and differ(names[i - 1], name):
                self._close(pos)
            self._take(name, fid, project)
        end = offset + len(names)
        if end > self.frontier:
            self.frontier, self._last = end, names[-1]
        self._empty = False

    def finish(self, end: int) -> None:
        """The pass ended at position ``end`` (the listing's end is a cut)."""
        if self.frontier < end:
            self._open.unknown, self._cover = True, False
        self._close(max(end, self._open.start))
        self._ids = set()

    def _take(self, name: str | None, fid: int | None, project: int | None) -> None:
        seg = self._open
        if name is None:
            seg.hidden = True
        else:
            seg.names.add(name)
        if fid is None:
            seg.unknown = True
        else:
            self._ids.add(fid)
        if project is not None:
            seg.projects.add(project)

    def _close(self, end: int) -> None:
        seg = self._open
        seg.end = end
        if seg.length > 0:
            seg.seen = len(self._ids)
            if self._cover:
                self.names |= seg.names
            elif not seg.unknown and seg.seen == seg.length:
                self.verified += 1
                self.names |= seg.names
            else:
                if self.keep_ids(seg.length):
                    seg.ids = self._ids
                self.gaps.append(seg)
        self._open, self._ids, self._cover = Segment(end, end), set(), True


__all__ = ["Segment", "SegmentTracker", "differ", "last_cut"]
