"""What a person sees on a terminal: ohpub runs under a pseudo-terminal and a terminal
emulator (pyte) renders the screen, at 120 and at 60 columns, while it works, when it
ends, and after Ctrl-C. Issue 12, problems 1 and 6."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyte
import pytest

from ohpub.cli.render import human_bytes
from tests.ohserver import OHServer

REPO = Path(__file__).resolve().parent.parent
BAR_WORDS = ("listing:", "files:", "bytes:")


@pytest.fixture
def slow176() -> Iterator[OHServer]:
    """Project 176 (31 files, 1.6 MB), storage capped at 150 kB/s per connection: with
    -j 2 a mirror takes about five seconds, long enough to watch the bars."""
    with OHServer().load_project176() as server:
        server.faults.bandwidth = 150_000
        yield server


class Terminal:
    """``python -m ohpub ARGS`` on a pty of ``cols`` x ``rows``, rendered by pyte."""

    def __init__(self, args: list[str], env: dict[str, str], cols: int, rows: int = 24) -> None:
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""
        self.frames: list[list[str]] = []
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ohpub", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=REPO,
        )
        os.close(slave)
        self.master = master

    def pump(self, until: Callable[[], bool] | None = None, timeout: float = 60) -> bool:
        """Feed the terminal until ``until()`` holds or the program ends; every read is a
        frame (what a person could have seen at that moment)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until is not None and until():
                return True
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the program is gone
                data = b""
            if not data:
                return until() if until is not None else True
            self.raw += data
            self.stream.feed(data)
            self.frames.append(list(self.screen.display))
        raise AssertionError("timed out; screen:\n" + "\n".join(self.lines()))

    def finish(self) -> int:
        self.pump()
        code = self.proc.wait(timeout=30)
        os.close(self.master)
        return code

    def lines(self) -> list[str]:
        """The screen now, trailing blanks and blank lines at the bottom removed."""
        rows = [row.rstrip() for row in self.screen.display]
        while rows and not rows[-1]:
            rows.pop()
        return rows

    def last_line(self) -> str:
        """The last line of text, with rows the terminal wrapped joined again."""
        rows = list(self.screen.display)
        while rows and not rows[-1].strip():
            rows.pop()
        line = rows.pop().rstrip() if rows else ""
        while rows and len(rows[-1].rstrip()) == self.screen.columns:
            line = rows.pop() + line
        return line

    def shows(self, pattern: str) -> bool:
        return any(re.search(pattern, row) for row in self.screen.display)


def _env(server: OHServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    env.update(OHPUB_BASE_URL=server.base_url, TERM="xterm-256color", NO_COLOR="1")
    env.update(extra)
    return env


def _summary(server: OHServer) -> re.Pattern[str]:
    total = sum(len(server.content(i)) for i in server.file_ids(public_only=True))
    return re.compile(
        rf"31 files: 31 downloaded \({re.escape(human_bytes(total))}\), 0 unchanged, "
        rf"0 failed in \d+\.\d s"
    )


def _no_bar_left(lines: list[str]) -> None:
    for row in lines:
        assert not row.lstrip().startswith(BAR_WORDS), f"bar left on the screen: {row!r}"


@pytest.mark.parametrize("cols", [120, 60])
def test_bars_while_mirroring_then_a_clean_summary(
    slow176: OHServer, tmp_path: Path, cols: int
) -> None:
    term = Terminal(["mirror", str(tmp_path / "m"), "-p", "176", "-j", "2"], _env(slow176), cols)
    term.pump(until=lambda: term.shows(r"files: +([3-9]|\d\d)/31"))
    frame = term.lines()
    files = next(row for row in frame if row.startswith("files:"))
    byte_line = next(row for row in frame if row.startswith("bytes:"))
    # Files done of the real total, a percentage, a bar, a clock and an ETA.
    assert re.match(r"files: +\d+/31 +\d+% ", files), files
    assert re.search(r"\[\d\d:\d\d, ETA (\d\d:\d\d|-)\]$", files), files
    assert re.search(r"\|█+ *\|", files), files
    # Bytes done of those announced (each transfer's size, once storage tells it), with
    # the rate, and the transfers really in flight (-j 2: at most 2).
    assert re.fullmatch(
        r"bytes: [\d.]+ [kM]?B of [\d.]+ [kM]?B( announced)?, [\d.]+ [kM]?B/s, [0-2] in flight",
        byte_line,
    ), byte_line
    code = term.finish()
    assert code == 0, term.lines()
    # No bar line ever reached the last column (it would wrap and tear the bars).
    for frame in term.frames:
        bars = [row.rstrip() for row in frame if row.startswith(BAR_WORDS)]
        assert all(len(row) < cols for row in bars), frame
    # The total was the listing's from the start: never "0/1" or a total below 31.
    totals = {m.group(1) for f in term.frames for r in f for m in [re.search(r"/(\d+) ", r)] if m}
    assert totals <= {"31"}, totals
    # The ETA is not guessed from the first files: none before three are done.
    for f in term.frames:
        for row in f:
            m = re.match(r"files: +(\d+)/31 .*ETA ([-\d:]+)\]", row)
            if m and int(m.group(1)) < 3:
                assert m.group(2) == "-", row
    # What stays: the summary alone, at column 0, no leftovers of the bars.
    lines = term.lines()
    _no_bar_left(lines)
    assert _summary(slow176).fullmatch(term.last_line()), lines


def test_listing_phase_shows_a_running_clock(slow176: OHServer, tmp_path: Path) -> None:
    slow176.faults.latency["api"] = 2.5  # a slow listing: the first page takes 2.5 s
    term = Terminal(["mirror", str(tmp_path / "m"), "-p", "176"], _env(slow176), 100)
    # Nothing is listed yet, and the clock still runs: the view is redrawn by a timer.
    term.pump(until=lambda: term.shows(r"^listing: 0 files so far \[00:00\]"))
    term.pump(until=lambda: term.shows(r"^listing: 0 files so far \[00:02\]"))
    assert term.finish() == 0
    _no_bar_left(term.lines())
    assert _summary(slow176).fullmatch(term.last_line())


def test_ctrl_c_says_what_was_done(slow176: OHServer, tmp_path: Path) -> None:
    term = Terminal(["mirror", str(tmp_path / "m"), "-p", "176", "-j", "2"], _env(slow176), 80)
    term.pump(until=lambda: term.shows(r"files: +([2-9]|1\d)/31"))
    term.proc.send_signal(signal.SIGINT)
    code = term.finish()
    assert code == 130
    lines = term.lines()
    _no_bar_left(lines)
    m = re.fullmatch(
        r"ohpub: interrupted: (\d+) downloaded, (\d+) not done; a rerun resumes", term.last_line()
    )
    assert m, lines
    done, left = int(m.group(1)), int(m.group(2))
    assert done >= 2 and done + left == 31
    on_disk = [p for p in (tmp_path / "m").rglob("*.json") if ".ohpub" not in p.parts]
    assert len(on_disk) == done


def test_dumb_terminal_gets_no_cursor_movement(slow176: OHServer, tmp_path: Path) -> None:
    slow176.faults.bandwidth = 1_000_000
    env = _env(slow176, TERM="dumb")
    term = Terminal(["mirror", str(tmp_path / "m"), "-p", "176"], env, 100)
    assert term.finish() == 0
    text = term.raw.decode()
    assert "\x1b" not in text
    assert "\r" not in text.replace("\r\n", "\n"), text[:500]
    assert _summary(slow176).fullmatch(term.last_line())


def test_dumb_terminal_gets_plain_status_lines_now_and_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from ohpub.cli.progress import MirrorView
    from ohpub.mirror.types import FileResult
    from ohpub.model.records import FileStatus

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "dumb")
    err = Tty()
    view = MirrorView(
        fmt="text", quiet=False, bars=True, out=io.StringIO(), stream=err, plain_every=0.05
    )
    view.listing_done(31)
    for i in range(5):
        view.result(FileResult(i, Path(f"a/{i}"), FileStatus.DOWNLOADED))
    deadline = time.monotonic() + 10
    while err.getvalue().count("\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    view.close()
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue() and "\x1b" not in err.getvalue()
    assert re.fullmatch(
        r"ohpub: files: 5/31 +16% \[\d\d:\d\d, ETA [-\d:]+\]; bytes: 0 B, 0 B/s, 0 in flight",
        lines[0],
    ), lines


def test_listing_line_gives_the_listings_own_count_once_known() -> None:
    import io

    from ohpub.cli.progress import MirrorView

    view = MirrorView(fmt="text", quiet=True, bars=False, out=io.StringIO())
    view.listed(12)
    assert view.lines(100)[0].startswith("listing: 12 files so far [")
    view.expected(4120)  # Events.expected: the count of files in scope, from page one
    view.listed(1200)
    assert view.lines(100)[0].startswith("listing: 1200 of 4120 files so far [")
    view.sized(2_600_000)  # optional Events.sized: Content-Length of transfers begun
    view.progress(1_200_000)
    assert view.lines(100)[1].startswith("bytes: 1.2 MB of 2.6 MB announced, ")
    view.listing_done(4120)
    assert view.lines(100)[0].startswith("files: 0/4120   0% |")


def test_an_error_starts_at_column_0_on_a_clean_screen(slow176: OHServer, tmp_path: Path) -> None:
    slow176.faults.latency["api"] = 0.5  # the bars are up before the listing fails
    slow176.faults.listing("500")
    env = _env(slow176, OHPUB_RETRIES="2", OHPUB_RETRY_BASE="0.3", OHPUB_RETRY_CAP="0.3")
    term = Terminal(["mirror", str(tmp_path / "m"), "-p", "176"], env, 80)
    term.pump(until=lambda: term.shows(r"^listing: "))
    assert term.finish() == 1
    lines = term.lines()
    _no_bar_left(lines)
    assert term.last_line().startswith("ohpub: error: "), lines
