"""The destination seam: what a mirror run, verify, status and the index need of DEST.

A ``Destination`` is where placed files live. Two implementations: ``LocalDest`` (a
directory tree; every call is one of ``local/tree.py``'s, unchanged) and
``ohpub.bucket.BucketDest`` (``s3://bucket/prefix``). Either way the state database, the
partial downloads and the local lock live in a local directory, ``root``: DEST itself for
a tree, the work directory for a bucket. The plan never sees the difference: it compares
a *fingerprint* of the placed file with the one recorded when it was placed ((size,
mtime_ns) for a file, (size, an ETag-derived int) for an object).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from ohpub.local.index import INDEX_NAME, write_index
from ohpub.local.state import OHPUB_DIR, StateDB
from ohpub.local.tree import (
    forget_partial,
    move_within,
    place,
    remove_within,
    rmdir_within,
    sync_dirs,
)
from ohpub.model.hashing import FileDigest, hash_file

Fingerprint = tuple[int, int]


class Destination(Protocol):
    """DEST as the mirror, verify, status and index use it."""

    root: Path
    """The local directory holding ``.ohpub/`` (state, partials, lock)."""

    def describe(self) -> str:
        """DEST as the user wrote it (for messages)."""
        ...

    def fingerprint(self, relpath: str) -> Fingerprint | None:
        """What says "unchanged since placed"; None when nothing is there."""
        ...

    def prepare(self, batch: list[tuple[Path, str, dict[str, str]]]) -> None:
        """Start placing a batch at once: (partial, final path, facts) of each file that
        ``place`` is called for next. A tree does nothing (a rename is cheap); a bucket
        uploads them in parallel, and ``place`` then waits for each."""
        ...

    def place(self, part: Path, relpath: str, facts: dict[str, str]) -> Fingerprint | None:
        """Put a finished, verified partial at its final path (and drop the partial);
        ``facts`` are the file's own facts (id, sha256, md5, created) where the
        destination can keep them with the bytes. Returns the new fingerprint."""
        ...

    def sync(self, reldirs: Iterable[str]) -> None:
        """Make a batch of placements durable."""
        ...

    def move(self, old: str, new: str) -> None: ...

    def remove(self, relpath: str) -> None: ...

    def prune(self, relpath: str) -> None:
        """Drop directories a move or delete left empty."""
        ...

    def digest(self, relpath: str) -> FileDigest:
        """sha256 and size of the placed bytes (a full read); OSError when absent."""
        ...

    def walk(self) -> Iterator[str]:
        """Every placed path but ohpub's own (``.ohpub/``, ``index.jsonl``), sorted."""
        ...

    def has_index(self) -> bool: ...

    def write_index(self, state: StateDB) -> None: ...


class LocalDest:
    """A directory tree: the behaviour ohpub always had, through ``local/tree.py``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._prefix = os.fspath(root)

    def describe(self) -> str:
        return str(self.root)

    def fingerprint(self, relpath: str) -> Fingerprint | None:
        """One lstat on a string path: the no-op run calls this once per file."""
        try:
            st = os.lstat(os.path.join(self._prefix, relpath))
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None

    def prepare(self, batch: list[tuple[Path, str, dict[str, str]]]) -> None:
        """Nothing to start: each placement is one rename."""

    def place(self, part: Path, relpath: str, facts: dict[str, str]) -> Fingerprint | None:
        place(part, self.root, relpath, sync=False)
        forget_partial(part, root=self.root)  # h4: no symlink followed below DEST
        return self.fingerprint(relpath)

    def sync(self, reldirs: Iterable[str]) -> None:
        sync_dirs(self.root, reldirs)

    def move(self, old: str, new: str) -> None:
        move_within(self.root, old, new)

    def remove(self, relpath: str) -> None:
        remove_within(self.root, relpath)

    def prune(self, relpath: str) -> None:
        parts = relpath.split("/")[:-1]
        while parts and parts[0] != OHPUB_DIR:
            if not rmdir_within(self.root, "/".join(parts)):  # no symlink followed
                return
            parts.pop()

    def digest(self, relpath: str) -> FileDigest:
        return hash_file(self.root / relpath)

    def walk(self) -> Iterator[str]:
        root = self.root
        for top, dirs, files in os.walk(root, followlinks=False):
            rel_root = os.path.relpath(top, root)
            if rel_root == ".":
                dirs[:] = [d for d in dirs if d != OHPUB_DIR]
                files = [f for f in files if f != INDEX_NAME]
            dirs.sort()
            for name in sorted(files):
                yield name if rel_root == "." else f"{rel_root}/{name}".replace(os.sep, "/")

    def has_index(self) -> bool:
        return (self.root / INDEX_NAME).is_file()

    def write_index(self, state: StateDB) -> None:
        write_index(self.root, state)


def facts_of(fs: Any, sha256: str | None, md5: str | None) -> dict[str, str]:
    """The facts an object carries about itself (user metadata on a bucket)."""
    facts = {"ohpub-id": str(fs.id), "ohpub-created": str(fs.created or "")}
    if sha256:
        facts["ohpub-sha256"] = sha256
    if md5:
        facts["ohpub-md5"] = md5
    return facts


__all__ = ["Destination", "Fingerprint", "LocalDest", "facts_of"]
