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
    id: int
    target: str | None
    status: str  # downloaded | resumed | unchanged | failed | not-found | refused
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


def fetch_files(
    client: Client,
    ids: list[int],
    *,
    directory: Path,
    output: str | None,
    force: bool,
    on_message: Callable[[str], None],
    on_result: Callable[[FetchResult], None],
) -> list[FetchResult]:
    """Fetch each id; one result per id (``ok``, or an ``error``, ``usage`` when it is the
    caller's)."""
    downloader = Downloader(client)
    if output == "-":
        f = client.get_file(ids[0])
        d = downloader.to_stream(f, sys.stdout.buffer)
        on_message(f"ohpub: {f.id} ({f.basename}): {d.size} bytes to stdout, verified")
        return [FetchResult(f.id, "-", "downloaded", d.size)]
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
    for f in records:
        target = Path(output) if output is not None else directory / names[f.id]
        results.append(_fetch_one(downloader, f, target, force))
    for r in results:
        on_result(r)
    return results


def _fetch_one(downloader: Downloader, f: DataFile, target: Path, force: bool) -> FetchResult:
    if target.is_dir():
        return FetchResult(
            f.id, str(target), "failed", error=f"{target} is a directory", usage=True
        )
    part = target.with_name(part_name(target.name, f.id, _name_max(target.parent)))
    try:
        d = downloader.to_part(f, part)
        if os.path.lexists(target):
            regular = target.is_file() and not target.is_symlink()
            same = regular and hash_file(target).sha256 == d.sha256
            if same:
                forget_partial(part)
                return FetchResult(f.id, str(target), "unchanged", d.size)
            if not force:
                return FetchResult(
                    f.id,
                    str(target),
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
        return FetchResult(f.id, str(target), "resumed" if d.resumed else "downloaded", d.size)
    except OhpubError as exc:
        return FetchResult(f.id, str(target), "failed", error=exc.message, hint=exc.hint)
