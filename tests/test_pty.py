"""Terminal sessions: ohpub under a pseudo-terminal shows progress bars and colour; the
same runs piped to files carry no control characters at all."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ohpub.cli.render import human_bytes
from tests.ohserver import OHServer

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def slow176() -> Iterator[OHServer]:
    """Project 176 (31 files, 1.6 MB) with storage capped at 300 kB/s per connection, so a
    mirror takes a second or two and the bars redraw several times."""
    with OHServer().load_project176() as server:
        server.faults.bandwidth = 300_000
        yield server


def _env(server: OHServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    env.update(OHPUB_BASE_URL=server.base_url, TERM="xterm-256color", **extra)
    return env


def run_in_pty(args: list[str], env: dict[str, str], timeout: float = 90) -> tuple[int, str]:
    """Run ``python -m ohpub ARGS`` with stdin, stdout and stderr on a 100x30 terminal;
    return the exit code and everything the terminal received."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ohpub", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=REPO,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every slave descriptor is closed, the process is gone
                break
            if not data:
                break
            chunks.append(data)
        else:
            proc.kill()
            raise AssertionError("ohpub did not finish under the pty")
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def _expected_summary(server: OHServer) -> re.Pattern[str]:
    total = sum(len(server.content(i)) for i in server.file_ids(public_only=True))
    return re.compile(
        rf"31 files: 31 downloaded \({re.escape(human_bytes(total))}\), 0 unchanged, "
        rf"0 failed in \d+\.\d s"
    )


def test_mirror_on_a_terminal_shows_bars_then_the_summary(
    slow176: OHServer, tmp_path: Path
) -> None:
    code, out = run_in_pty(["mirror", str(tmp_path / "m"), "-p", "176", "-j", "4"], _env(slow176))
    assert code == 0, out
    # Both bars, animated in place on the terminal (tests/test_terminal.py renders them).
    assert re.search(r"files: +\d+/31 +\d+% \|", out), out[-2000:]
    assert re.search(r"bytes: [\d.]+ [kM]?B, [\d.]+ [kM]?B/s, \d in flight", out)
    assert "\r" in out and re.search(r"\x1b\[1?A", out)  # redrawn in place: up a line
    # The last thing on the screen is the summary line, after the bars were cleared.
    last = ANSI.sub("", out).replace("\r\n", "\n").rstrip("\n").rsplit("\n", 1)[-1]
    last = last.rsplit("\r", 1)[-1].strip()
    assert _expected_summary(slow176).fullmatch(last), repr(last)


def test_mirror_piped_to_files_has_no_control_characters(slow176: OHServer, tmp_path: Path) -> None:
    for fmt in ("text", "jsonl"):
        out, err = tmp_path / f"{fmt}.out", tmp_path / f"{fmt}.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            code = subprocess.run(
                [sys.executable, "-m", "ohpub", "mirror", str(tmp_path / fmt), "-p", "176"]
                + ["-f", fmt],
                stdout=o,
                stderr=e,
                env=_env(slow176),
                cwd=REPO,
                timeout=90,
            ).returncode
        assert code == 0
        for path in (out, err):
            data = path.read_bytes()
            assert b"\x1b" not in data and b"\r" not in data, (path.name, data[:300])
        lines = err.read_text().splitlines()
        assert len(lines) == 1 and _expected_summary(slow176).fullmatch(lines[0]), lines
        assert len(out.read_text().splitlines()) == (31 if fmt == "jsonl" else 0)


def test_quiet_on_a_terminal_shows_nothing(slow176: OHServer, tmp_path: Path) -> None:
    code, out = run_in_pty(["-q", "mirror", str(tmp_path), "-p", "176"], _env(slow176))
    assert code == 0
    assert out == ""


def test_colour_on_a_terminal_unless_no_color(slow176: OHServer) -> None:
    code, out = run_in_pty(["list", "-p", "999"], _env(slow176))
    assert code == 2
    assert "\x1b[" in out and "project 999 not found" in ANSI.sub("", out)
    code, out = run_in_pty(["list", "-p", "999"], _env(slow176, NO_COLOR="1"))
    assert code == 2
    assert "\x1b" not in out and out.startswith("ohpub: error: project 999 not found")


def test_list_is_a_table_on_a_terminal(slow176: OHServer) -> None:
    code, out = run_in_pty(["list", "-p", "176"], _env(slow176, NO_COLOR="1"))
    assert code == 0
    assert "\x1b" not in out
    lines = out.replace("\r\n", "\n").splitlines()
    assert lines[0].split()[:2] == ["id", "created"] and len(lines) == 2 + 31
    assert max(len(line.rstrip()) for line in lines) <= 100
    code, coloured = run_in_pty(["list", "-p", "176"], _env(slow176))
    assert code == 0 and "\x1b[1m" in coloured  # a bold header
