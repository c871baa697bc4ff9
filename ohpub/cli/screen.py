"""Live status lines on a terminal's stderr, and the messages that must not tear them.

A ``LiveLines`` redraws a few lines in place from a timer thread (so a clock keeps
running while the program waits on a slow server), and erases them whole when it stops:
what follows starts at column 0 of a clean line. Every other line for stderr goes
through ``SCREEN.above_bars()``, which lifts the live lines, lets the message out and
draws them again beneath it.

Only real terminals get cursor movement. With ``TERM=dumb`` (Emacs shells, some CI
consoles) the same lines come out as plain text, one line now and then, never a ``\\r``
or an escape sequence.

``SCREEN`` is one object per process because stderr is: the bars of one command and
the log records of every thread share it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import TextIO

Render = Callable[[int], list[str]]
"""Given the terminal width, the lines to show (each shorter than the width)."""


class _Screen:
    """The process's stderr: one lock, and the live lines currently shown (if any)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.live: LiveLines | None = None

    @contextlib.contextmanager
    def above_bars(self) -> Iterator[None]:
        """Write a message line: the live lines are erased first and drawn again after."""
        with self.lock:
            live = self.live
            if live is not None:
                live.erase()
            try:
                yield
            finally:
                if live is not None:
                    live.draw()


SCREEN = _Screen()


def is_dumb(stream: TextIO) -> bool:
    """A terminal that cannot move its cursor (or no terminal at all)."""
    return os.environ.get("TERM", "") in ("", "dumb") or not stream.isatty()


def _width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size().columns


class LiveLines:
    """A few status lines redrawn in place every ``interval`` seconds until ``close()``.

    On a dumb terminal the lines are printed as plain text every ``plain_every``
    seconds instead (joined into one line), and nothing is ever erased.
    """

    def __init__(
        self,
        stream: TextIO,
        render: Render,
        *,
        interval: float = 0.2,
        plain_every: float = 10.0,
    ) -> None:
        self.stream = stream
        self.render = render
        self.dumb = is_dumb(stream)
        self.interval = plain_every if self.dumb else interval
        self._shown = 0
        """Lines on the screen now; the cursor sits at the end of the last one."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ohpub-bars", daemon=True)
        self._closed = False

    def start(self) -> None:
        with SCREEN.lock:
            SCREEN.live = self
            self.draw()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with SCREEN.lock:
                if self._stop.is_set():
                    return
                if self.dumb:
                    self._plain()
                else:
                    self.draw()

    def _plain(self) -> None:
        # Width 0: the renderer leaves out anything drawn to fit (a bar), keeps the words.
        text = "; ".join(line.strip() for line in self.render(0) if line.strip())
        if text:
            self._write(f"ohpub: {text}\n")

    def draw(self) -> None:
        """Redraw in place (terminals only); lines never reach the last column, so the
        terminal never wraps them and the cursor stays where we count it."""
        if self.dumb or self._closed:
            return
        width = max(10, _width(self.stream))
        lines = [line[: width - 1] for line in self.render(width)]
        out = self._up() + "\r" + "\n".join(line + "\x1b[K" for line in lines)
        if len(lines) < self._shown:
            out += "\x1b[J"
        self._shown = len(lines)
        self._write(out)

    def erase(self) -> None:
        """Remove the lines; the cursor ends at column 0 of the first one's row."""
        if self.dumb or not self._shown:
            return
        self._write(self._up() + "\r\x1b[J")
        self._shown = 0

    def _up(self) -> str:
        return f"\x1b[{self._shown - 1}A" if self._shown > 1 else ""

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()

    def close(self) -> None:
        """Stop redrawing and erase the lines; safe to call twice."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        with SCREEN.lock:
            if not self._closed:
                self.erase()
                self._closed = True
            if SCREEN.live is self:
                SCREEN.live = None


def rate_window(samples: list[tuple[float, float]], now: float, value: float) -> float:
    """Per-second rate of ``value`` over the last few seconds of ``samples`` (which it
    updates in place): steadier than the last interval, truer than the whole run."""
    samples.append((now, value))
    while len(samples) > 2 and now - samples[0][0] > 5.0:
        samples.pop(0)
    t0, v0 = samples[0]
    return (value - v0) / (now - t0) if now - t0 > 0.3 else 0.0


__all__ = ["SCREEN", "LiveLines", "is_dumb", "rate_window"]
