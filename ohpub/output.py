"""Renderers (table / json / jsonl / csv), progress bars, messages, logging and the summary.

stdout carries data only; every message, warning and bar goes to stderr. Records
are written as they arrive so ``ohpub list | head -1`` answers before the last page,
and json output is a streamed array that is valid JSON once closed.

Colour only on a terminal and never with ``NO_COLOR``; progress bars only when stderr
is a terminal and never with ``--quiet``. ``--log-file`` gets a plain-text copy of
every message (timestamped, no colour, no bars, keys redacted), whatever ``--quiet``
says, so a cron job can stay silent and still leave a record.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, TextIO

from rich import box
from rich.console import Console
from rich.table import Table

from ohpub.engine import FileResult
from ohpub.errors import UsageError
from ohpub.http import redact
from ohpub.library import MirrorEvent, MirrorResult
from ohpub.records import DataFile
from ohpub.screen import SCREEN, LiveLines, rate_window
from ohpub.units import clock, human_bytes

log = logging.getLogger("ohpub")

FORMATS = ("table", "json", "jsonl", "csv")

FILE_COLUMNS = (
    "id",
    "basename",
    "created",
    "username",
    "project_id",
    "datatype_ids",
    "tags",
    "description",
    "download_url",
)
OBJECT_COLUMNS: dict[str, tuple[str, ...]] = {
    "projects": ("id", "name", "slug", "active", "leader", "organization", "short_description"),
    "datatypes": ("id", "name", "parent", "children", "description"),
    "members": ("username", "name", "profile_url"),
}


# -- colour and messages ------------------------------------------------------------------------


def use_color(stream: IO[str]) -> bool:
    """Colour only on a terminal and never when NO_COLOR is set (no-color.org)."""
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def stderr_console() -> Console:
    return Console(
        file=sys.stderr,
        no_color=not use_color(sys.stderr),
        highlight=False,
        soft_wrap=True,
    )


def write_stderr(text: str, style: str | None = None) -> None:
    """One message line on stderr, clear of any progress bar; coloured only where allowed."""
    with SCREEN.above_bars():
        if style and use_color(sys.stderr):
            stderr_console().print(text, style=style, markup=False)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


# Messages the CLI prints itself also go to the log file (when there is one) through
# this logger; it never reaches the terminal.
_file_log = logging.getLogger("ohpub.logfile")
_file_log.propagate = False
_file_log.setLevel(logging.DEBUG)
_file_log.addHandler(logging.NullHandler())


def error_line(message: str, hint: str | None = None) -> str:
    return f"ohpub: error: {message}" + (f" ({hint})" if hint else "")


def print_error(message: str, hint: str | None = None, *, stderr: bool = True) -> None:
    """An error: always on stderr (even with --quiet) and in the log file."""
    if stderr:
        write_stderr(error_line(message, hint), "bold red")
    _file_log.error("%s", message + (f" ({hint})" if hint else ""))


def print_warning(message: str, *, quiet: bool = False) -> None:
    """A warning: on stderr unless --quiet, always in the log file."""
    if not quiet:
        write_stderr(f"ohpub: warning: {message}", "yellow")
    _file_log.warning("%s", message)


def silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so later writes and the interpreter's final
    flush are quiet (a reader that went away is not an error)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def log_only(text: str, level: int = logging.INFO) -> None:
    """A line for the log file only (the start and end of a run)."""
    _file_log.log(level, "%s", text)


def notice(text: str, *, quiet: bool = False) -> None:
    """Progress and summary lines: on stderr unless --quiet, always in the log file."""
    if not quiet:
        write_stderr(text)
    _file_log.info("%s", text)


# -- logging: stderr and --log-file -------------------------------------------------------------

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _FileFormatter(logging.Formatter):
    """``2026-11-29T03:00:04+01:00 ohpub[4242] INFO message``: one line per line, no
    control characters (a basename cannot smuggle escapes into the log), keys redacted."""

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))
        text = _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
        stamp = datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="seconds")
        prefix = f"{stamp} ohpub[{record.process}] {record.levelname}"
        return "\n".join(f"{prefix} {line}" for line in (text.splitlines() or [""]))


class _StderrHandler(logging.Handler):
    """Log lines on stderr that do not tear the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            style = "bold red" if record.levelno >= logging.ERROR else None
            if style is None and record.levelno >= logging.WARNING:
                style = "yellow"
            write_stderr(self.format(record), style)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


_handlers: list[logging.Handler] = []


def configure_logging(*, verbose: bool, quiet: bool, log_file: Path | None) -> None:
    """Set up the ``ohpub`` logger: stderr at WARNING (DEBUG with --verbose, ERROR with
    --quiet) and, with --log-file, a plain-text file at INFO (DEBUG with --verbose)."""
    for h in _handlers:  # a previous invocation in this process (tests)
        h.close()
    _handlers.clear()
    root = logging.getLogger("ohpub")
    to_stderr = _StderrHandler()
    to_stderr.setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING)
    to_stderr.setFormatter(_RedactingFormatter("ohpub: %(message)s"))
    root.handlers[:] = [to_stderr]
    root.propagate = False
    level = to_stderr.level
    if log_file is not None:
        try:
            to_file: logging.Handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"cannot open log file {log_file}: {exc.strerror or exc}",
                hint="check that its directory exists and is writable",
            ) from None
        to_file.setLevel(logging.DEBUG if verbose else logging.INFO)
        to_file.setFormatter(_FileFormatter("%(message)s"))
        root.addHandler(to_file)
        _file_log.handlers[:] = [to_file]
        _handlers.append(to_file)
        level = min(level, to_file.level)
    else:
        _file_log.handlers[:] = [logging.NullHandler()]
    root.setLevel(level)


# -- records --------------------------------------------------------------------------------------


def file_record(f: DataFile) -> dict[str, Any]:
    """The API object as the server sent it, with derived fields added beside it."""
    rec = dict(f.raw)
    for key, value in f.derived().items():
        rec.setdefault(key, value)
    return rec


def _flat(f: DataFile) -> dict[str, Any]:
    desc = f.metadata.get("description") if isinstance(f.metadata, dict) else None
    return {
        "id": f.id,
        "basename": f.basename,
        "created": f.raw.get("created"),
        "username": f.username or "",
        "project_id": f.project_id if f.project_id is not None else "",
        "datatype_ids": " ".join(str(d) for d in f.datatype_ids),
        "tags": " ".join(f.tags),
        "description": desc if isinstance(desc, str) else "",
        "download_url": f.download_url,
    }


def _table_row(f: DataFile) -> dict[str, Any]:
    row = _flat(f)
    row["created"] = f.created.strftime("%Y-%m-%d %H:%M")
    row["username"] = f.username or "(hidden)"
    return row


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# -- tables ---------------------------------------------------------------------------------------

WIDE = 110
"""Terminals at least this wide get the wide-only columns too."""


@dataclass(frozen=True)
class Column:
    """A table column. ``keep``: one line, never shortened (ids, dates, usernames);
    ``fold``: long values continue on the next line; ``cut``: one line, cut with "…"
    to fit. ``wide``: shown only on terminals at least ``WIDE`` columns wide."""

    key: str
    header: str
    mode: Literal["keep", "fold", "cut"] = "keep"
    justify: Literal["left", "right"] = "left"
    wide: bool = False


FILE_TABLE = (
    Column("id", "id", justify="right"),
    Column("created", "created (UTC)"),
    Column("username", "user"),
    Column("project_id", "project", justify="right"),
    Column("datatype_ids", "datatypes", wide=True),
    Column("tags", "tags", "fold", wide=True),
    Column("basename", "basename", "fold"),
)
OBJECT_TABLES: dict[str, tuple[Column, ...]] = {
    "projects": (
        Column("id", "id", justify="right"),
        Column("name", "name", "fold"),
        Column("active", "active", wide=True),
        Column("leader", "leader", "fold", wide=True),
        Column("short_description", "description", "cut"),
    ),
    "datatypes": (
        Column("id", "id", justify="right"),
        Column("name", "name", "fold"),
        Column("parent", "parent"),
        Column("description", "description", "cut"),
    ),
    "members": (
        Column("username", "username"),
        Column("name", "name", "fold"),
        Column("profile_url", "profile", "fold"),
    ),
}
_FOLD_BUDGET = 30
"""Width a fold column is counted at when sharing out the room for cut columns."""


def print_table(rows: Iterable[dict[str, Any]], columns: tuple[Column, ...], out: TextIO) -> int:
    """A borderless table that reads well on 80 columns: ids, dates and usernames stay on
    one line, names fold, free text is cut to fit. Everything is collected first."""
    color = use_color(out)
    console = Console(file=out, no_color=not color, soft_wrap=False, highlight=False)
    width = console.width
    cols = [c for c in columns if not c.wide or width >= WIDE]
    cells = [[_cell(r.get(c.key)) for c in cols] for r in rows]
    natural = [
        max([len(c.header)] + [max(map(len, row[i].splitlines() or [""])) for row in cells])
        for i, c in enumerate(cols)
    ]
    widths = [
        min(n, _FOLD_BUDGET) if c.mode == "fold" else n
        for c, n in zip(cols, natural, strict=True)
        if c.mode != "cut"
    ]
    used = len(cols) - 1 + sum(widths)  # one blank column between columns
    n_cut = sum(1 for c in cols if c.mode == "cut")
    cut_width = max(12, (width - used) // n_cut) if n_cut else None
    table = Table(
        box=box.SIMPLE_HEAD,
        padding=0,  # the box's blank column separates: 80 columns go a long way
        pad_edge=False,
        show_edge=False,
        header_style="bold" if color else "",  # NO_COLOR: no styling at all
        border_style="dim" if color else "",
    )
    for c in cols:
        table.add_column(
            c.header,
            justify=c.justify,
            no_wrap=c.mode != "fold",
            overflow="fold" if c.mode == "fold" else "ellipsis",
            max_width=cut_width if c.mode == "cut" else None,
            min_width=12 if c.mode == "fold" else None,
        )
    for row in cells:
        table.add_row(*row)
    console.print(table)
    return len(cells)


def write_records(
    records: Iterable[dict[str, Any]],
    fmt: str,
    out: TextIO,
    *,
    columns: tuple[str, ...],
    flat: Iterator[dict[str, Any]] | None = None,
    table: tuple[Column, ...] | None = None,
) -> int:
    """Write records in one format, flushing each so pipes see them at once."""
    n = 0
    if fmt == "jsonl":
        for rec in records:
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            out.flush()
            n += 1
    elif fmt == "json":
        out.write("[")
        for rec in records:
            out.write(("\n" if n == 0 else ",\n") + json.dumps(rec, ensure_ascii=False))
            out.flush()
            n += 1
        out.write("\n]\n" if n else "]\n")
        out.flush()
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        source: Iterable[dict[str, Any]] = flat if flat is not None else records
        for rec in source:
            writer.writerow([_cell(rec.get(c)) for c in columns])
            out.flush()
            n += 1
    elif fmt == "table":
        source = flat if flat is not None else records
        spec = table if table is not None else tuple(Column(c, c, "fold") for c in columns)
        n = print_table(source, spec, out)
    else:
        raise ValueError(fmt)
    return n


def write_objects(items: Iterable[dict[str, Any]], kind: str, fmt: str, out: TextIO) -> int:
    """Projects, datatypes or members in one format (json/jsonl as the server sent them)."""
    return write_records(
        items, fmt, out, columns=OBJECT_COLUMNS[kind], table=OBJECT_TABLES.get(kind)
    )


def write_files(files: Iterable[DataFile], fmt: str, out: TextIO) -> int:
    """Render data files; json/jsonl keep the server's shape, csv/table a flat view."""
    it = iter(files)
    if fmt == "table":
        return print_table((_table_row(f) for f in it), FILE_TABLE, out)
    if fmt == "csv":
        return write_records(iter(()), fmt, out, columns=FILE_COLUMNS, flat=(_flat(f) for f in it))
    return write_records((file_record(f) for f in it), fmt, out, columns=FILE_COLUMNS)


def write_jsonl(rec: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    out.flush()


# -- summaries ------------------------------------------------------------------------------------


def summary_line(s: MirrorResult, *, dry_run: bool = False) -> str:
    """``31 files: 29 downloaded (4.1 MB), 2 unchanged, 0 failed in 3.2 s``; for a dry run
    ``dry run: 31 files: 29 to download (4.1 MB), 1 to rename, 0 to remove, 1 unchanged``."""
    c = s.counts
    files = s.total
    if dry_run:
        parts = [
            f"{c['planned']} to download ({human_bytes(s.bytes_planned)})",
            f"{c['renamed']} to rename",
            f"{c['deleted']} to remove",
            f"{c['unchanged']} unchanged",
        ]
        if c["removed-upstream"]:
            parts.append(f"{c['removed-upstream']} removed upstream (kept; --delete removes them)")
        if c["unavailable"]:
            parts.append(f"{c['unavailable']} unavailable")
        if c["skipped"]:
            parts.append(f"{c['skipped']} skipped (over --max-size)")
        return f"dry run: {files} files: " + ", ".join(parts)
    got = c["downloaded"] + c["resumed"]
    parts = [f"{got} downloaded ({human_bytes(s.bytes_downloaded)})"]
    if c["resumed"]:
        parts[0] += f" of which {c['resumed']} resumed"
    parts.append(f"{c['unchanged']} unchanged")
    for key in ("renamed", "unavailable", "skipped", "removed-upstream", "deleted"):
        if c[key]:
            parts.append(f"{c[key]} {key}")
    parts.append(f"{c['failed']} failed")
    return f"{files} files: " + ", ".join(parts) + f" in {s.elapsed:.1f} s"


def totals_record(s: MirrorResult) -> dict[str, Any]:
    """The last jsonl record of ``mirror --dry-run``: the plan's totals.

    ``{"status": "totals", "files": 31, "download": {"files": 29, "bytes": 1480000},
    "rename": 1, "remove": 0, "unchanged": 1, "removed_upstream": 0, "unavailable": 0,
    "skipped": 0, "listing_complete": true}``. ``remove`` counts files --delete would
    delete; ``removed_upstream`` files no longer listed that stay on disk.
    """
    c = s.counts
    return {
        "status": "totals",
        "files": s.total,
        "download": {"files": c["planned"], "bytes": s.bytes_planned},
        "rename": c["renamed"],
        "remove": c["deleted"],
        "unchanged": c["unchanged"],
        "removed_upstream": c["removed-upstream"],
        "unavailable": c["unavailable"],
        "skipped": c["skipped"],
        "listing_complete": s.listing_complete,
    }


# -- the mirror's watcher -------------------------------------------------------------------------


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
