"""``ohpub fetch``: single files by id, with the mirror's resume and verification.

A file is downloaded next to its target as a hidden partial
(``.<name>.ohpub-part``, shortened to ``.<start of name>~<id>.ohpub-part`` when that
would exceed the file system's name limit) so an interrupted fetch resumes, and it only takes the
target name once complete and verified. An existing file at the target is never
overwritten silently: identical bytes count as done, different bytes need --force.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ohpub.local.tree import DiskError, forget_partial
from ohpub.model import layout
from ohpub.model.errors import NotFoundError, OhpubError, UsageError
from ohpub.model.hashing import hash_file
from ohpub.model.records import DataFile
from ohpub.remote.client import ApiClient as Client
from ohpub.transfer.downloader import Downloader


@dataclass
class FetchResult:
    """One id of ``fetch``: ``status`` is downloaded, resumed, unchanged, failed,
    not-found or refused (other bytes at ``target`` and no ``force``)."""

    id: int
    target: Path | None
    status: str
    bytes: int | None = None
    error: str | None = None
    hint: str | None = None
    usage: bool = False
    """The failure is the caller's (an unknown id, a directory in the way): exit 2."""

    @property
    def ok(self) -> bool:
        return self.error is None


_SIDECAR_SUFFIX = ".json.tmp"
"""The longest suffix added to a partial's name (its resume sidecar's temporary file)."""


def part_name(name: str, file_id: int, limit: int = 255) -> str:
    """The partial's name for a target called ``name``, stable across runs (so a fetch
    resumes) and short enough that it and its sidecar fit in ``limit`` bytes."""
    full = f".{name}.ohpub-part"
    if len((full + _SIDECAR_SUFFIX).encode()) <= limit:
        return full
    tail = f"~{file_id}.ohpub-part"
    room = max(0, limit - len(_SIDECAR_SUFFIX) - len(tail) - 1)
    start = name.encode()[:room].decode("utf-8", "ignore")
    return f".{start}{tail}"


def _name_max(directory: Path) -> int:
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _names(files: Iterable[DataFile]) -> dict[int, str]:
    """Safe, distinct names for files written into one directory (the layout's rule)."""
    entries = [layout.Entry(f.id, f.basename, f.created, None, None) for f in files]
    return {fid: p.rsplit("/", 1)[1] for fid, p in layout.plan_paths(entries).items()}


@dataclass
class FetchWatch:
    """What a display may learn while ``fetch_files`` works: a file's transfer begins
    (``started``), storage announces its size (``sized``), bytes arrive (``progress``,
    negative on a restart), bytes of an earlier attempt are kept (``reused``)."""

    started: Callable[[DataFile], None] = lambda _f: None
    sized: Callable[[int], None] = lambda _n: None
    progress: Callable[[int], None] = lambda _n: None
    reused: Callable[[int], None] = lambda _n: None


def fetch_files(
    client: Client,
    ids: list[int],
    *,
    directory: Path,
    output: str | None,
    force: bool,
    on_message: Callable[[str], None],
    on_result: Callable[[FetchResult], None],
    watch: FetchWatch | None = None,
) -> list[FetchResult]:
    """Fetch each id; one result per id (``ok``, or an ``error``, ``usage`` when it is the
    caller's)."""
    downloader = Downloader(client)
    watch = watch or FetchWatch()
    if output == "-":
        f = client.get_file(ids[0])
        watch.started(f)
        d = downloader.to_stream(f, sys.stdout.buffer, watch.progress)
        on_message(f"ohpub: {f.id} ({f.basename}): {d.size} bytes to stdout, verified")
        return [FetchResult(f.id, Path("-"), "downloaded", d.size)]
    records: list[DataFile] = []
    results: list[FetchResult] = []
    for fid in dict.fromkeys(ids):
        try:
            records.append(client.get_file(fid))
        except NotFoundError as exc:
            results.append(FetchResult(fid, None, "not-found", error=exc.message, usage=True))
    names = _names(records)
    if output is None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {directory}: {exc.strerror or exc}") from exc
    elif not Path(output).parent.is_dir():
        raise UsageError(f"directory of {output} does not exist")
    writable_dir(directory if output is None else Path(output).parent)
    for f in records:
        target = Path(output) if output is not None else directory / names[f.id]
        watch.started(f)
        results.append(_fetch_one(downloader, f, target, force, watch))
    for r in results:
        on_result(r)
    return results


def writable_dir(directory: Path) -> None:
    """Refuse (``UsageError``, as ``mirror`` does for DEST) a directory this process cannot
    write into, before anything is downloaded: the error names the directory, not the
    hidden partial file that would have failed first."""
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{directory} is not writable", hint="check its permissions")


def _fetch_one(
    downloader: Downloader,
    f: DataFile,
    target: Path,
    force: bool,
    watch: FetchWatch | None = None,
) -> FetchResult:
    watch = watch or FetchWatch()
    if target.is_dir():
        return FetchResult(f.id, target, "failed", error=f"{target} is a directory", usage=True)
    part = target.with_name(part_name(target.name, f.id, _name_max(target.parent)))
    try:
        d = downloader.to_part(
            f, part, watch.progress, on_total=watch.sized, on_reused=watch.reused
        )
        if os.path.lexists(target):
            regular = target.is_file() and not target.is_symlink()
            same = regular and hash_file(target).sha256 == d.sha256
            if same:
                forget_partial(part)
                return FetchResult(f.id, target, "unchanged", d.size)
            if not force:
                return FetchResult(
                    f.id,
                    target,
                    "refused",
                    d.size,
                    error=f"{target} exists with different content; not overwritten",
                    hint="use --force to replace it",
                )
        try:
            os.replace(part, target)
            dirfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        except OSError as exc:
            raise DiskError(exc, target) from exc
        forget_partial(part)
        with contextlib.suppress(OSError):
            t = f.created.timestamp()
            os.utime(target, (t, t))
        return FetchResult(f.id, target, "resumed" if d.resumed else "downloaded", d.size)
    except OhpubError as exc:
        return FetchResult(f.id, target, "failed", error=exc.message, hint=exc.hint)
