"""Renderers (table / json / jsonl / csv), messages, logging and the summary line (the
progress display is ``cli.progress``).

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TextIO

from ohpub.cli.screen import above_bars, width_of
from ohpub.library import MirrorResult
from ohpub.model.errors import UsageError, with_hint
from ohpub.model.records import DataFile
from ohpub.model.units import human_bytes, plural
from ohpub.remote.http import redact

if TYPE_CHECKING:
    from rich.console import Console

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
    from rich.console import Console  # imported when a coloured message is printed

    return Console(
        file=sys.stderr,
        no_color=not use_color(sys.stderr),
        highlight=False,
        soft_wrap=True,
    )


def write_stderr(text: str, style: str | None = None) -> None:
    """One message line on stderr, clear of any progress bar; coloured only where allowed."""
    with above_bars():
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
    """``ohpub: error: project 999 not found; 'ohpub list projects' shows ...``: the hint
    after a semicolon, never in brackets that would nest with the message's own."""
    return f"ohpub: error: {with_hint(message, hint)}"


def print_error(message: str, hint: str | None = None, *, stderr: bool = True) -> None:
    """An error: always on stderr (even with --quiet) and in the log file."""
    if stderr:
        write_stderr(error_line(message, hint), "bold red")
    _file_log.error("%s", with_hint(message, hint))


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
    """Log lines on stderr that do not tear the progress bars, and on a terminal never
    wider than it (a long URL loses its middle: ``https://host/a…/b.json``); the log file
    keeps every line whole."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            style = "bold red" if record.levelno >= logging.ERROR else None
            if style is None and record.levelno >= logging.WARNING:
                style = "yellow"
            text = self.format(record)
            if sys.stderr.isatty():
                text = fit_line(text, width_of(sys.stderr) - 1)
            write_stderr(text, style)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


_URL_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+")


def fit_line(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns: the longest URL in it shortened in its middle
    first (its host and its end say the most), then the end cut, with ``…``."""
    if len(text) <= width or width < 20:
        return text
    urls = sorted(_URL_RE.finditer(text), key=lambda m: len(m.group()), reverse=True)
    if urls:
        m = urls[0]
        url = m.group()
        keep = max(24, len(url) - (len(text) - width) - 1)
        if keep < len(url):
            head = keep * 2 // 3
            url = url[:head] + "…" + url[len(url) - (keep - head - 1) :]
            text = text[: m.start()] + url + text[m.end() :]
    if len(text) <= width:
        return text
    tail = min(len(text) // 2, (width - 1) // 2)  # the end says what happens next
    return text[: width - 1 - tail] + "…" + text[len(text) - tail :]


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
    from rich import box
    from rich.console import Console
    from rich.table import Table

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
    """``31 files: 29 downloaded (4.1 MB), 2 unchanged, 0 failed in 3.2 s`` (the bytes this
    run fetched; resumed files add ``4 resumed: 3.9 MB already there``); for a dry run
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
        return f"dry run: {plural(files, 'file')}: " + ", ".join(parts)
    got = c["downloaded"] + c["resumed"]
    detail = human_bytes(s.bytes_downloaded)  # this run's bytes only
    if c["resumed"]:
        detail += f", {c['resumed']} resumed: {human_bytes(s.bytes_reused)} already there"
    parts = [f"{got} downloaded ({detail})"]
    parts.append(f"{c['unchanged']} unchanged")
    for key in ("renamed", "unavailable", "skipped", "removed-upstream", "deleted", "waiting"):
        if c[key]:
            parts.append(f"{c[key]} {key}")
    parts.append(f"{c['failed']} failed")
    return f"{plural(files, 'file')}: " + ", ".join(parts) + f" in {s.elapsed:.1f} s"


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


