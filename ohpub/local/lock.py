"""The per-DEST lock: one run writes a mirror at a time, and a dead run never leaves a
stale lock (the kernel drops an ``flock`` with its holder)."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ohpub.local import tree
from ohpub.local.state import LOCK_NAME, NO_WRITE, OHPUB_DIR, check_ohpub_dir, ohpub_dir
from ohpub.model.errors import LockedError, UsageError


class DestLock:
    """One exclusive ``flock`` per DEST, so two runs never write the same mirror.

    flock (not a pid file) because the kernel drops it when the holder dies, even
    by SIGKILL or power loss: there is never a stale lock to clean up by hand. The
    pid (and command, for other than a mirror) written into the file are only for
    messages and ``status``.
    The file is opened with O_NOFOLLOW below DEST and must be a regular file, so a
    symlink planted at ``.ohpub/lock`` is refused, never truncated. The descriptor is
    close-on-exec, so child processes do not inherit (and prolong) the lock. Locks
    belong to the open file description, so a second DestLock on the same DEST
    conflicts even within one process.

    ``read_only_ok`` (verify): when DEST cannot be written (another user's mirror, a
    read-only mount) the lock file is opened read-only and held *shared*, which still
    keeps a mirror from starting mid-way and fails at once if one is running; with no
    lock file it may open (none at all on a read-only mount, where no mirror can run)
    it goes on unlocked.
    ``exclusive`` says which case applies: only an exclusive holder may write.
    """

    TRIES = 5
    """A ``status`` probe holds the lock shared for microseconds; a run that starts at
    that very moment retries a few times (10 ms apart) instead of failing with "locked"."""

    def __init__(self, dest: Path, *, command: str = "mirror", read_only_ok: bool = False) -> None:
        self.dest = dest
        self.path = ohpub_dir(dest) / LOCK_NAME
        self.command = command
        self.read_only_ok = read_only_ok
        self.exclusive = False
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once or raise LockedError; never wait.

        Waiting would make a second run look hung; failing fast tells the user why.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this DestLock")
        check_ohpub_dir(self.dest)
        rel = f"{OHPUB_DIR}/{LOCK_NAME}"
        exclusive = True
        try:
            fd = tree.open_nofollow(self.dest, rel, os.O_RDWR | os.O_CREAT, 0o644, create_dirs=True)
        except tree.DiskError as exc:
            if not (self.read_only_ok and exc.errno in NO_WRITE):
                raise UsageError(
                    f"cannot create the lock file {self.path}: {os.strerror(exc.errno or 0)}",
                    hint="DEST must be a writable directory",
                ) from exc
            try:
                fd = tree.open_nofollow(self.dest, rel, os.O_RDONLY)
            except tree.DiskError:
                return  # no lock file we may open: go on read-only, unlocked
            exclusive = False
        self._lock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if exclusive:
            try:
                os.ftruncate(fd, 0)
                # "<pid>" for a mirror (as every ohpub writes), "<pid> <command>" otherwise
                tag = "" if self.command == "mirror" else f" {self.command}"
                os.write(fd, f"{os.getpid()}{tag}\n".encode("ascii"))
            except OSError:
                pass  # the pid is a courtesy for messages; the lock itself is held
        self._fd, self.exclusive = fd, exclusive

    def _lock(self, fd: int, op: int) -> None:
        for attempt in range(self.TRIES):
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                return
            except OSError as exc:
                busy = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
                if busy and attempt + 1 < self.TRIES:
                    time.sleep(0.01)
                    continue
                holder = _read_holder(fd)
                os.close(fd)
                if busy:
                    who = holder.describe() if holder else "pid unknown"
                    raise LockedError(
                        f"{self.dest} is locked by another ohpub run ({who})",
                        hint="wait for that run to finish or stop it; "
                        "the lock is released as soon as it exits",
                    ) from exc
                raise UsageError(
                    f"cannot lock {self.path}: {exc.strerror or exc}",
                    hint="DEST must be on a filesystem that supports flock",
                ) from exc

    def release(self) -> None:
        """Drop the lock; harmless if it is not held."""
        fd, self._fd = self._fd, None
        self.exclusive = False
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> DestLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@dataclass(frozen=True)
class LockHolder:
    """Who holds a DEST's lock, as its lock file says (``<pid>`` for a mirror, else
    ``<pid> <command>``); ``command`` is None when the file says nothing usable."""

    pid: int | None
    command: str | None

    def describe(self) -> str:
        pid = f"pid {self.pid}" if self.pid is not None else "pid unknown"
        return f"{self.command}, {pid}" if self.command else pid


def lock_holder(dest: Path) -> LockHolder | None:
    """The run holding DEST's lock exclusively right now, or None.

    A shared, non-blocking flock probe on a read-only descriptor: it works on a mirror
    the caller cannot write, never waits, and never writes the lock file.
    """
    try:
        fd = tree.open_nofollow(dest, f"{OHPUB_DIR}/{LOCK_NAME}", os.O_RDONLY)
    except (tree.DiskError, UsageError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return _read_holder(fd) or LockHolder(None, None)
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> LockHolder | None:
    try:
        data = os.pread(fd, 64, 0)
    except OSError:
        return None
    words = data.decode("ascii", "replace").split()
    if not words or not words[0].isdigit():
        return None
    return LockHolder(int(words[0]), words[1] if len(words) > 1 else "mirror")
