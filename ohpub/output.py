"""Renderers (table / json / jsonl / csv), progress bars, messages and the summary line.

stdout carries data only; every message, warning and bar goes to stderr. Records
are written as they arrive so ``ohpub list | head -1`` answers before the last page,
and json output is a streamed array that is valid JSON once closed.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import IO, Any, TextIO

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from ohpub.mirror import FileResult, MirrorSummary
from ohpub.records import DataFile

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


def error_line(message: str, hint: str | None = None) -> str:
    return f"ohpub: error: {message}" + (f" ({hint})" if hint else "")


def print_error(message: str, hint: str | None = None) -> None:
    text = error_line(message, hint)
    if use_color(sys.stderr):
        stderr_console().print(text, style="bold red", markup=False)
    else:
        print(text, file=sys.stderr, flush=True)


def print_warning(message: str) -> None:
    text = f"ohpub: warning: {message}"
    if use_color(sys.stderr):
        stderr_console().print(text, style="yellow", markup=False)
    else:
        print(text, file=sys.stderr, flush=True)


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


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def write_records(
    records: Iterable[dict[str, Any]],
    fmt: str,
    out: TextIO,
    *,
    columns: tuple[str, ...],
    flat: Iterator[dict[str, Any]] | None = None,
    title: str | None = None,
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
        table = Table(title=title, show_lines=False, header_style="bold")
        for c in columns:
            table.add_column(c, overflow="fold")
        source = flat if flat is not None else records
        for rec in source:
            table.add_row(*(_cell(rec.get(c)) for c in columns))
            n += 1
        Console(file=out, no_color=not use_color(out), soft_wrap=False).print(table)
    else:
        raise ValueError(fmt)
    return n


def write_files(files: Iterable[DataFile], fmt: str, out: TextIO) -> int:
    """Render data files; json/jsonl keep the server's shape, csv/table a flat view."""
    columns: tuple[str, ...] = FILE_COLUMNS
    if fmt == "table":
        columns = tuple(c for c in FILE_COLUMNS if c not in ("download_url", "description"))
    it = iter(files)
    if fmt in ("csv", "table"):
        return write_records(iter(()), fmt, out, columns=columns, flat=(_flat(f) for f in it))
    return write_records((file_record(f) for f in it), fmt, out, columns=columns)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def summary_line(s: MirrorSummary, *, dry_run: bool = False) -> str:
    """``31 files: 29 downloaded (4.1 MB), 2 unchanged, 0 failed in 3.2 s``."""
    c = s.counts
    files = s.files
    if dry_run:
        parts = [f"{c['planned']} to download ({human_bytes(s.bytes_planned)})"]
        parts += [f"{c['renamed']} to rename", f"{c['unchanged']} unchanged"]
        if c["removed-upstream"]:
            parts.append(f"{c['removed-upstream']} removed upstream (kept)")
        if c["deleted"]:
            parts.append(f"{c['deleted']} to delete")
        for key in ("unavailable", "skipped"):
            if c[key]:
                parts.append(f"{c[key]} {key}")
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


class MirrorView:
    """The mirror's watcher: jsonl records on stdout, bars (tty only) and warnings on stderr."""

    def __init__(self, *, fmt: str, quiet: bool, bars: bool, out: TextIO) -> None:
        self.fmt = fmt
        self.quiet = quiet
        self.out = out
        self._lock = threading.Lock()
        self._bars = bars and not quiet
        self._files: tqdm[Any] | None = None
        self._bytes: tqdm[Any] | None = None
        self._listed = 0
        self._active: dict[int, str] = {}
        if self._bars:
            self._files = tqdm(
                total=0, unit="file", desc="files", position=0, file=sys.stderr, leave=False
            )
            self._bytes = tqdm(
                total=0,
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                desc="bytes",
                position=1,
                file=sys.stderr,
                leave=False,
            )

    def listed(self, n: int) -> None:
        self._listed = n
        if self._files is not None:
            with self._lock:
                self._files.total = n
                self._files.refresh()

    def queued(self, n: int) -> None:
        pass

    def started(self, f: DataFile) -> None:
        if self._bytes is not None:
            with self._lock:
                self._active[f.id] = f.basename
                self._bytes.set_postfix_str(self._active_text(), refresh=False)

    def finished(self, f: DataFile) -> None:
        if self._bytes is not None:
            with self._lock:
                self._active.pop(f.id, None)
                self._bytes.set_postfix_str(self._active_text(), refresh=False)

    def _active_text(self) -> str:
        names = list(self._active.values())
        text = ", ".join(names[:3])
        return text + (f" +{len(names) - 3}" if len(names) > 3 else "")

    def progress(self, nbytes: int) -> None:
        if self._bytes is not None:
            with self._lock:
                if nbytes > 0:
                    self._bytes.total = max(self._bytes.total or 0, self._bytes.n + nbytes)
                self._bytes.update(nbytes)

    def result(self, r: FileResult) -> None:
        with self._lock:
            if self._files is not None:
                self._files.update(1)
            if self.fmt == "jsonl":
                self.out.write(json.dumps(r.as_dict(), ensure_ascii=False) + "\n")
                self.out.flush()
            elif r.status in ("failed",) and not self.quiet:
                self._message(f"ohpub: failed: {r.path or r.id}: {r.error}")

    def warning(self, message: str) -> None:
        if not self.quiet:
            with self._lock:
                self._message(f"ohpub: warning: {message}")

    def _message(self, text: str) -> None:
        if self._files is not None:
            tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        for bar in (self._files, self._bytes):
            if bar is not None:
                bar.close()
