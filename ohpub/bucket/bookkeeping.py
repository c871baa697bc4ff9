"""The bookkeeping kept with a bucket mirror: ``prefix/.ohpub/state.sqlite3``, the state
database uploaded at the end of every run, and its working copy in the work directory.

A marker beside the working copy holds the ETag of the state object it was last synced
with: when the bucket's is the same, the local copy is current (or newer, after a killed
run) and is used; when it differs (another machine ran) or there is no local copy, the
bucket's is downloaded.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from ohpub.bucket.objects import BucketDest

STATE_KEY = ".ohpub/state.sqlite3"
MARKER = "bucket-state-etag"


def _marker(db: Path) -> Path:
    return db.with_name(MARKER)


def pull(bucket: BucketDest, db: Path, etag: str | None) -> bool:
    """Download the state object into ``db`` unless the local copy is current; True when
    there is a state to open afterwards."""
    marker = _marker(db)
    known = marker.read_text().strip() if marker.is_file() else None
    if etag is None or (db.is_file() and known == etag):
        return db.is_file()
    tmp = db.with_name(db.name + ".download")
    bucket.s3.get_file(STATE_KEY, tmp)
    for sfx in ("-wal", "-shm", "-journal"):
        Path(str(db) + sfx).unlink(missing_ok=True)
    os.replace(tmp, db)
    marker.write_text(etag)
    return True


def push(bucket: BucketDest, db: Path) -> None:
    """Upload a consistent copy of the state (SQLite's backup API, WAL included)."""
    with tempfile.TemporaryDirectory(dir=db.parent) as tmp:
        copy = Path(tmp) / db.name
        src = sqlite3.connect(db)
        dst = sqlite3.connect(copy)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        etag = bucket.upload(STATE_KEY, copy)
    _marker(db).write_text(etag)


__all__ = ["STATE_KEY", "pull", "push"]
