"""Writes inside DEST that never follow a symlink.

Directories are walked with ``O_NOFOLLOW`` directory descriptors, so a symlink planted
at a user or project directory cannot redirect a write outside DEST; renames are
atomic and directories are fsynced, so a final path holds either nothing, the old
bytes, or the new ones.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ohpub.errors import OhpubError, UsageError


class DiskError(OhpubError):
    """Writing the local file failed (disk full, file too large, read-only, ...)."""

    def __init__(self, exc: OSError, path: Path | None = None) -> None:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        where = f" {path}" if path else ""
        super().__init__(f"cannot write{where}: {reason}")
        self.errno = exc.errno


def place(src: Path, root: Path, relpath: str, *, sync: bool = True) -> Path:
    """Move a verified file to ``root/relpath`` without following any symlink inside root.

    Directories are walked with ``O_NOFOLLOW`` file descriptors, so a symlink planted at
    a user or project directory cannot redirect the write outside ``root``; a symlink at
    the final name is replaced, not followed. The rename is atomic and the directory is
    fsynced (by the caller's ``sync_dirs`` when ``sync`` is False, once for a batch), so
    the final path holds either nothing, the old bytes, or the new ones.
    """
    parts = relpath.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"unsafe path {relpath!r}")
    dirfd = open_dir_nofollow(root, parts[:-1], create=True)
    try:
        os.replace(src, parts[-1], dst_dir_fd=dirfd)
        if sync:
            os.fsync(dirfd)
    except OSError as exc:
        raise DiskError(exc, root / relpath) from exc
    finally:
        os.close(dirfd)
    return root / relpath


def sync_dirs(root: Path, reldirs: Iterable[str]) -> None:
    """fsync each directory once, making a batch of renames durable together."""
    for reldir in sorted(set(reldirs)):
        fd = open_dir_nofollow(root, reldir.split("/") if reldir else [], create=False)
        try:
            os.fsync(fd)
        except OSError as exc:
            raise DiskError(exc, root / reldir) from exc
        finally:
            os.close(fd)


def forget_partial(part: Path) -> None:
    """Remove a partial file's sidecar (and the partial, if it is still there)."""
    for p in (part, meta_path_of(part)):
        with contextlib.suppress(OSError):
            p.unlink()


def meta_path_of(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def move_within(root: Path, old: str, new: str) -> None:
    """Rename one placed file to another path under root (same no-follow rules as place)."""
    old_parts = old.split("/")
    new_parts = new.split("/")
    sfd = open_dir_nofollow(root, old_parts[:-1], create=False)
    try:
        dfd = open_dir_nofollow(root, new_parts[:-1], create=True)
        try:
            st = os.lstat(old_parts[-1], dir_fd=sfd)
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"{root / old} is not a regular file")
            os.replace(old_parts[-1], new_parts[-1], src_dir_fd=sfd, dst_dir_fd=dfd)
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise DiskError(exc, root / new) from exc
    finally:
        os.close(sfd)


def remove_within(root: Path, relpath: str) -> bool:
    """Delete one placed file (not following symlinks); False if it was not there."""
    parts = relpath.split("/")
    try:
        dfd = open_dir_nofollow(root, parts[:-1], create=False)
    except (DiskError, UsageError):
        return False
    try:
        os.unlink(parts[-1], dir_fd=dfd)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(dfd)


def open_dir_nofollow(root: Path, parts: list[str], *, create: bool) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY
    try:
        fd = os.open(root, flags)
    except OSError as exc:
        raise DiskError(exc, root) from exc
    try:
        for i, name in enumerate(parts):
            if name in ("", ".", ".."):
                raise UsageError(f"unsafe path component {name!r}")
            try:
                nfd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, dir_fd=fd)
                nfd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    where = root.joinpath(*parts[: i + 1])
                    raise UsageError(
                        f"{where} is a symlink or not a directory; refusing to follow it"
                    ) from exc
                raise
            os.close(fd)
            fd = nfd
    except OSError as exc:
        os.close(fd)
        raise DiskError(exc, root.joinpath(*parts)) from exc
    except BaseException:
        os.close(fd)
        raise
    return fd


def regular_size(path: Path) -> int | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


__all__ = [
    "DiskError",
    "place",
    "sync_dirs",
    "forget_partial",
    "meta_path_of",
    "move_within",
    "remove_within",
    "regular_size",
]
