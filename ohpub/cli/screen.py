"""Live lines on a terminal's stderr, drawn by tqdm, and the messages that must not tear
them.

A ``LiveBars`` is a few tqdm bars at fixed positions (the first line, the second, ...).
tqdm draws them in place, fits them to the terminal's width, and erases them whole when
they close (``leave=False``): what follows starts at column 0 of a clean line. Every
other line for stderr (or stdout, when it is the same terminal) goes through
``above_bars()``, which is tqdm's ``external_write_mode``: the bars are lifted, the
message goes out, the bars come back beneath it.

What tqdm cannot do, and this module does by hand (a few lines each):

- **a clock that runs while nothing happens.** tqdm redraws a bar only when its count
  changes; a server that keeps ohpub waiting would freeze the elapsed time on screen.
  A timer thread refreshes the bars five times a second.
- **dumb terminals.** tqdm always redraws with ``\\r``. With ``TERM=dumb`` (Emacs shells,
  some CI consoles) the bars draw nowhere, and every ``plain_every`` seconds their text
  (without the bar itself) is printed as one plain line: never a ``\\r`` or an escape.

``LiveBars`` calls its owner's ``update(bars, plain)`` before each redraw, under tqdm's
lock: the owner sets each bar's count, total, format and ``fields`` (extra names its
format may use, beside tqdm's own ``{n}``, ``{total}``, ``{percentage}``, ``{bar}``,
``{elapsed}``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, TextIO

from tqdm import tqdm


class Bar(tqdm):  # type: ignore[type-arg]
    """A tqdm bar whose format may also name the owner's ``fields``."""

    monitor_interval = 0  # the refresh timer below does that job; no tqdm monitor thread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.fields: dict[str, Any] = {}
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self) -> MutableMapping[str, Any]:
        d = super().format_dict
        d.update(getattr(self, "fields", {}))
        return d


def _lock() -> Any:
    """tqdm's own write lock: bars, ``above_bars`` and the refresh timer take turns."""
    return Bar.get_lock()  # type: ignore[no-untyped-call]


BAR_CHARS = " █"
"""Whole blocks only: a bar reads the same in every terminal font."""


@contextlib.contextmanager
def above_bars(stream: TextIO | None = None) -> Iterator[None]:
    """Write a message line: the live bars are erased first and drawn again after."""
    with Bar.external_write_mode(file=stream if stream is not None else sys.stderr):
        yield


def is_dumb(stream: TextIO) -> bool:
    """A terminal that cannot move its cursor (or no terminal at all)."""
    return os.environ.get("TERM", "") in ("", "dumb") or not stream.isatty()


def width_of(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size().columns


class Nowhere:
    """Where a dumb terminal's bars draw: they keep their counts, and write nothing."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        return None


Update = Callable[[list[Bar], bool], None]
"""``update(bars, plain)``: set the bars' counts and formats; ``plain`` asks for words only
(no ``{bar}``), for a dumb terminal."""


class LiveBars:
    """``count`` tqdm bars on ``stream``, redrawn every ``interval`` seconds until
    ``close()``; on a dumb terminal a plain line every ``plain_every`` seconds instead."""

    def __init__(
        self,
        stream: TextIO,
        count: int,
        update: Update,
        *,
        interval: float = 0.2,
        plain_every: float = 10.0,
        delay: float = 0.0,
    ) -> None:
        self.stream = stream
        self.update = update
        self.dumb = is_dumb(stream)
        self.interval = plain_every if self.dumb else interval
        self._show_at = time.monotonic() + delay
        """Nothing is drawn before (a command that answers at once never shows a bar)."""
        self._count = count
        self.bars: list[Bar] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ohpub-bars", daemon=True)
        self._closed = False

    def start(self) -> None:
        with _lock():
            if self.dumb:
                self._make_bars(Nowhere())  # a dumb terminal's first line: after plain_every
            else:
                self._tick()
        self._thread.start()

    def _make_bars(self, out: Any) -> None:
        """The bars, made when they are first drawn: tqdm redraws every bar it knows when
        a message goes above them, and a bar not yet due must not show up that way."""
        for pos in range(self._count):
            self.bars.append(
                Bar(
                    file=out,
                    position=pos,
                    leave=False,
                    ascii=BAR_CHARS,
                    bar_format="",
                    miniters=0,
                    mininterval=0,
                    delay=1e9,  # drawn by the ticks, never by tqdm on its own
                    dynamic_ncols=False,
                )
            )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with _lock():
                if self._stop.is_set():
                    return
                self._tick()

    def _tick(self) -> None:
        """Redraw (or, dumb, print the words of) every bar; the lock is held."""
        with contextlib.suppress(OSError, ValueError):
            if time.monotonic() < self._show_at:
                return
            if self.dumb:
                self._plain()
                return
            width = max(10, width_of(self.stream))
            if not self.bars:
                self._make_bars(self.stream)
            for bar in self.bars:
                bar.ncols = width - 1  # never the last column: no wrap, no torn lines
                bar.delay = 0
            self.update(self.bars, False)
            for bar in self.bars:
                bar.refresh(nolock=True)

    def _plain(self) -> None:
        for bar in self.bars:
            bar.ncols = None
        self.update(self.bars, True)
        text = "; ".join(t for t in (str(bar).strip() for bar in self.bars) if t)
        if text:
            self.stream.write(f"ohpub: {text}\n")
            self.stream.flush()

    def close(self) -> None:
        """Stop redrawing and erase the bars; safe to call twice."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        with _lock(), contextlib.suppress(OSError, ValueError):
            if not self._closed:
                self._closed = True
                for bar in reversed(self.bars):  # the last line first: the cursor ends up
                    bar.close()  # at column 0 of the first line, all of them blank


__all__ = ["BAR_CHARS", "Bar", "LiveBars", "Nowhere", "above_bars", "is_dumb", "width_of"]
