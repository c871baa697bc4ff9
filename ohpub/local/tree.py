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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ohpub.model.errors import OhpubError, UsageError


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
    parts = _parts(relpath)
    try:  # a source below root (a partial in DEST/.ohpub/partial) is reached the same way
        sparts = _parts(src.relative_to(root).as_posix())
    except ValueError:
        sparts = None
    sfd = open_dir_nofollow(root, sparts[:-1], create=False) if sparts else None
    try:
        dirfd = open_dir_nofollow(root, parts[:-1], create=True)
        try:
            if sparts is None:
                os.replace(src, parts[-1], dst_dir_fd=dirfd)
            else:
                os.replace(sparts[-1], parts[-1], src_dir_fd=sfd, dst_dir_fd=dirfd)
            if sync:
                os.fsync(dirfd)
        except OSError as exc:
            raise DiskError(exc, root / relpath) from exc
        finally:
            os.close(dirfd)
    finally:
        if sfd is not None:
            os.close(sfd)
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


@dataclass(frozen=True)
class Below:
    """A file named by a root and a relative path, opened without following a symlink at
    any component below the root (the root itself is the user's choice)."""

    root: Path
    rel: str

    @property
    def path(self) -> Path:
        return self.root / self.rel

    def __str__(self) -> str:
        return str(self.path)

    def unlink(self) -> None:
        """Remove the file (no symlink followed); OSError if it cannot be removed."""
        try:
            remove_within(self.root, self.rel)
        except (DiskError, UsageError) as exc:
            raise OSError(str(exc)) from exc


def forget_partial(part: Path, *, root: Path | None = None) -> None:
    """Remove a partial file's sidecar (and the partial, if it is still there).

    With ``root`` (DEST, for the partials under ``.ohpub/partial``) nothing below root is
    followed, so a symlinked folder cannot make this delete files elsewhere.
    """
    for p in (part, meta_path_of(part)):
        if root is None:
            with contextlib.suppress(OSError):
                p.unlink()
        else:
            with contextlib.suppress(OSError, DiskError, UsageError):
                remove_within(root, p.relative_to(root).as_posix())


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
    return _unlink_within(root, relpath, os.unlink, FileNotFoundError)


def _unlink_within(
    root: Path, relpath: str, remove: Any, missing: type[OSError] | tuple[type[OSError], ...]
) -> bool:
    """``remove(name, dir_fd=...)`` of the last component below root, walking the folders
    with no symlink followed; False when a folder is missing or refused, or ``missing``."""
    parts = relpath.split("/")
    try:
        dfd = open_dir_nofollow(root, parts[:-1], create=False)
    except (DiskError, UsageError):
        return False
    try:
        remove(parts[-1], dir_fd=dfd)
        return True
    except missing:
        return False
    finally:
        os.close(dfd)


def _parts(relpath: str) -> list[str]:
    parts = relpath.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"unsafe path {relpath!r}")
    return parts


def _refused(where: Path, what: str) -> UsageError:
    return UsageError(
        f"{where} is {what}; refusing to follow it",
        hint="ohpub never follows a symlink inside DEST; remove it (or pick another DEST)",
    )


def open_nofollow(
    root: Path, relpath: str, flags: int, mode: int = 0o644, *, create_dirs: bool = False
) -> int:
    """Open ``root/relpath`` without following a symlink at any component below root.

    ``root`` itself is the user's choice and may be a symlink. The file must be a regular
    file (a FIFO or device planted at the name is refused, never opened for blocking I/O);
    a symlink at the name is refused with a UsageError. Other failures are DiskErrors.
    """
    parts = _parts(relpath)
    dirfd = open_dir_nofollow(root, parts[:-1], create=create_dirs)
    try:
        return open_at(dirfd, parts[-1], flags, mode, where=root / relpath)
    finally:
        os.close(dirfd)


def open_at(dirfd: int, name: str, flags: int, mode: int = 0o644, *, where: Path) -> int:
    """``open(name)`` in the directory ``dirfd`` with O_NOFOLLOW; regular files only."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refused(where, "a symlink") from exc
        raise DiskError(exc, where) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _refused(where, "not a regular file")
    return fd


def read_nofollow(root: Path, relpath: str, limit: int = 1 << 20) -> bytes | None:
    """The first ``limit`` bytes of ``root/relpath``; None if it is missing, refused or
    unreadable (callers use this for small, optional files such as resume sidecars)."""
    try:
        fd = open_nofollow(root, relpath, os.O_RDONLY)
    except (DiskError, UsageError):
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def write_atomic(
    root: Path, relpath: str, chunks: Iterable[bytes], *, tmp_relpath: str | None = None
) -> None:
    """Write ``root/relpath`` whole or not at all, never through a symlink.

    The bytes go to a fresh temporary file (``relpath + ".tmp"`` unless ``tmp_relpath``
    names another place on the same filesystem), created with O_EXCL after removing
    whatever sat at its name, so a planted symlink is neither followed nor truncated; then
    fsync, an atomic rename over the final name (a symlink there is replaced, not
    followed) and an fsync of the directory.
    """
    parts = _parts(relpath)
    tparts = _parts(tmp_relpath or relpath + ".tmp")
    tdir = open_dir_nofollow(root, tparts[:-1], create=False)
    try:
        ddir = open_dir_nofollow(root, parts[:-1], create=False)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tparts[-1], dir_fd=tdir)
            where = root.joinpath(*tparts)
            fd = open_at(tdir, tparts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, where=where)
            try:
                with os.fdopen(fd, "wb") as fh:
                    for chunk in chunks:
                        fh.write(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tparts[-1], parts[-1], src_dir_fd=tdir, dst_dir_fd=ddir)
                os.fsync(ddir)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tparts[-1], dir_fd=tdir)
                raise DiskError(exc, root / relpath) from exc
        finally:
            os.close(ddir)
    except OSError as exc:
        raise DiskError(exc, root / relpath) from exc
    finally:
        os.close(tdir)


def lstat_within(root: Path, relpath: str) -> os.stat_result | None:
    """``lstat`` of ``root/relpath`` with no symlink followed on the way; None if absent."""
    parts = _parts(relpath)
    try:
        dirfd = open_dir_nofollow(root, parts[:-1], create=False)
    except DiskError as exc:
        if exc.errno in (errno.ENOENT,):
            return None
        raise
    try:
        return os.lstat(parts[-1], dir_fd=dirfd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DiskError(exc, root / relpath) from exc
    finally:
        os.close(dirfd)


def require_regular_or_absent(root: Path, relpath: str) -> None:
    """Refuse (UsageError) when ``root/relpath`` exists but is a symlink or not a regular
    file: for files opened by a library that follows symlinks itself (SQLite)."""
    st = lstat_within(root, relpath)
    if st is None or stat.S_ISREG(st.st_mode):
        return
    what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
    raise _refused(root / relpath, what)


def rmdir_within(root: Path, relpath: str) -> bool:
    """Remove one empty directory below root (no symlink followed); False if it could not
    be removed (not empty, not there, a symlink in the way)."""
    _parts(relpath)  # refuses unsafe components
    return _unlink_within(root, relpath, os.rmdir, OSError)


def utime_within(root: Path, relpath: str, times: tuple[float, float]) -> None:
    """``os.utime`` of ``root/relpath`` with no symlink followed (best effort: a failure
    is ignored, an mtime is cosmetic)."""
    parts = _parts(relpath)
    try:
        dirfd = open_dir_nofollow(root, parts[:-1], create=False)
    except (DiskError, UsageError):
        return
    try:
        os.utime(parts[-1], times, dir_fd=dirfd, follow_symlinks=False)
    except OSError:
        pass
    finally:
        os.close(dirfd)


def open_dir_nofollow(root: Path, parts: list[str], *, create: bool) -> int:
    """A directory fd of ``root/parts...``, no component below root followed if a symlink.

    ``create`` makes missing directories. A symlink (or a non-directory) in the way is a
    UsageError that says why; other failures are DiskErrors.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
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
                    raise _refused(where, "a symlink or not a directory") from exc
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
    "Below",
    "forget_partial",
    "meta_path_of",
    "move_within",
    "remove_within",
    "regular_size",
    "open_dir_nofollow",
    "open_nofollow",
    "open_at",
    "read_nofollow",
    "write_atomic",
    "lstat_within",
    "require_regular_or_absent",
    "rmdir_within",
    "utime_within",
]
