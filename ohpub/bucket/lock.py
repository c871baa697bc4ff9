"""The lock of a bucket mirror: ``prefix/.ohpub/lock``, created with a conditional put.

``If-None-Match: *`` makes the create atomic: of two runs, one gets the object, the other
``412`` and exits 3 naming the holder. The object holds the run's id, host, pid and a
lease expiry; a thread renews it (``If-Match`` on the ETag it holds) while the run lives.
A lock whose lease expired, or whose holder was on this host and is dead (a kill -9), is
taken over, conditional on its ETag, so two runs taking over at once cannot both win.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from ohpub.bucket.store import S3Target
from ohpub.model.errors import LockedError

LOCK_KEY = ".ohpub/lock"
LEASE_S = float(os.environ.get("OHPUB_S3_LEASE", "120"))
"""How long a lock outlives its last renewal (renewed every third of it)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_holder(body: dict[str, Any]) -> str:
    return (f"{body.get('command', 'mirror')} (pid {body.get('pid')} on {body.get('host')}, "
            f"lease until {time.strftime('%H:%M:%S', time.localtime(body.get('expires', 0)))})")


def read_holder(s3: S3Target) -> dict[str, Any] | None:
    """The lock's holder, if any (for ``status``)."""
    got = s3.get_bytes(LOCK_KEY)
    if got is None:
        return None
    try:
        body = json.loads(got[0])
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class BucketLock:
    """Hold ``prefix/.ohpub/lock`` for the life of a ``with`` block."""

    def __init__(self, s3: S3Target, *, command: str = "mirror") -> None:
        self.s3 = s3
        self.command = command
        self.run_id = uuid.uuid4().hex
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def _body(self) -> bytes:
        return json.dumps({"run": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                           "command": self.command, "expires": time.time() + LEASE_S}).encode()

    def acquire(self) -> None:
        etag = self.s3.create_lock(LOCK_KEY, self._body())
        if etag is None:
            etag = self._take_over()
        self._etag = etag
        self._thread = threading.Thread(target=self._renew, name="ohpub-s3-lock", daemon=True)
        self._thread.start()

    def _take_over(self) -> str:
        got = self.s3.get_bytes(LOCK_KEY)
        if got is None:  # released meanwhile
            etag = self.s3.create_lock(LOCK_KEY, self._body())
            if etag is not None:
                return etag
            got = self.s3.get_bytes(LOCK_KEY)
        raw, held_etag = got or (b"{}", "")
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        here = body.get("host") == socket.gethostname()
        dead = here and isinstance(body.get("pid"), int) and not _alive(body["pid"])
        if dead or float(body.get("expires", 0)) < time.time():
            etag = self.s3.refresh_lock(LOCK_KEY, self._body(), held_etag)
            if etag is not None:
                return etag
        raise LockedError(f"{self.s3.url_of('')} is locked by another run: "
                          + describe_holder(body),
                          hint="wait for it to finish (a dead run's lock expires with its "
                          "lease)")

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            try:
                etag = self.s3.refresh_lock(LOCK_KEY, self._body(), self._etag or "")
            except Exception:  # noqa: BLE001 - a renewal lost to the network: try again
                continue
            if etag is None:
                self.lost = True
                return
            self._etag = etag

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._etag is not None and not self.lost:
            with contextlib.suppress(Exception):  # the lease expires it anyway
                self.s3.delete(LOCK_KEY)
        self._etag = None

    def __enter__(self) -> BucketLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["BucketLock", "LOCK_KEY", "read_holder", "describe_holder"]
