"""``s3://bucket/prefix`` as a destination: the objects, their fingerprints, and where the
local half (state, partials) lives.

The fingerprint of a placed object is (size, an int derived from its ETag), taken from ONE
listing of the prefix per run, streamed into a small SQLite table in the work directory
(memory does not grow with the mirror; no HEAD per file). A modified object gets a new
ETag, so the plan re-hashes it (a full read) exactly as it re-hashes a file whose mtime
changed. Every change this run makes (place, move, remove) updates that table.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

from ohpub.bucket.store import BucketError, S3Target, Upload
from ohpub.model.hashing import FileDigest

META_DIR = ".ohpub"
"""The bookkeeping under the prefix (lock, state): never a mirrored file."""
INDEX_KEY = "index.jsonl"
LISTING_DB = "bucket-listing.sqlite3"


def bucket_url(dest: object) -> str | None:
    """DEST parsed once: the normalised ``s3://bucket/prefix`` when ``dest`` is a *string*
    of that form, else None (a local path). A ``Path`` is always local: ``Path`` collapses
    ``//``, so ``./s3:/x`` (a folder named ``s3:``) and a URL would look alike."""
    if not isinstance(dest, str) or not dest.startswith("s3://"):
        return None
    return normalise_url(dest)


def is_bucket_url(dest: object) -> bool:
    """``s3://bucket/prefix`` as a string (see :func:`bucket_url`)."""
    return isinstance(dest, str) and dest.startswith("s3://")


def normalise_url(dest: str) -> str:
    """``s3://bucket/prefix`` without trailing or doubled slashes at the ends."""
    if not dest.startswith("s3://"):
        raise BucketError("other", f"{dest}: not an s3://bucket/prefix URL")
    bucket, _, prefix = dest[5:].partition("/")
    if not bucket:
        raise BucketError("other", f"{dest}: no bucket name (s3://bucket/prefix)")
    return f"s3://{bucket}/{prefix.strip('/')}".rstrip("/")


def default_work_dir(url: str) -> Path:
    """``$XDG_CACHE_HOME/ohpub/<bucket>--<prefix>``: one work directory per mirror."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    name = quote(url[5:].replace("/", "--"), safe="-_.")
    return Path(cache) / "ohpub" / name


def etag_int(etag: str) -> int:
    """The ETag as a signed 63-bit int (what the state's ``mtime_ns`` column holds)."""
    return int.from_bytes(hashlib.sha256(etag.strip('"').encode()).digest()[:7], "big")


class BucketDest:
    """The objects under one prefix; ``root`` is the local work directory."""

    def __init__(self, url: str, root: Path, target: S3Target | None = None) -> None:
        self.url = normalise_url(url)
        self.root = root
        self.s3 = target or S3Target(self.url)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.url

    # -- the one listing per run ----------------------------------------------------------

    def load_listing(self) -> None:
        """List the prefix once (streamed, a page at a time) into the work directory."""
        path = self.root / META_DIR / LISTING_DB
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE o (key TEXT PRIMARY KEY, size INTEGER, etag TEXT)")
        batch: list[tuple[str, int, str]] = []
        db.execute("BEGIN")
        for key, size, etag in self.s3.list():
            batch.append((key, size, etag))
            if len(batch) >= 1000:
                db.executemany("INSERT OR REPLACE INTO o VALUES (?,?,?)", batch)
                batch = []
        db.executemany("INSERT OR REPLACE INTO o VALUES (?,?,?)", batch)
        db.execute("COMMIT")
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _row(self, key: str) -> tuple[int, str] | None:
        assert self._db is not None, "load_listing() first"
        with self._lock:
            got = self._db.execute("SELECT size, etag FROM o WHERE key=?", (key,)).fetchone()
        return (int(got[0]), str(got[1])) if got else None

    def _set(self, key: str, row: tuple[int, str] | None) -> None:
        assert self._db is not None
        with self._lock:
            if row is None:
                self._db.execute("DELETE FROM o WHERE key=?", (key,))
            else:
                self._db.execute("INSERT OR REPLACE INTO o VALUES (?,?,?)", (key, *row))

    def keys(self, under: str = "") -> Iterator[tuple[str, int, str]]:
        """Listed keys (and size, ETag), sorted, a page at a time."""
        assert self._db is not None
        last = ""
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT key, size, etag FROM o WHERE key > ? AND key >= ? ORDER BY key "
                    "LIMIT 1000", (last, under)).fetchall()
            for key, size, etag in rows:
                if not key.startswith(under):
                    return
                yield key, size, etag
            if len(rows) < 1000:
                return
            last = rows[-1][0]

    # -- the Destination ------------------------------------------------------------------

    def fingerprint(self, relpath: str) -> tuple[int, int] | None:
        row = self._row(relpath)
        return (row[0], etag_int(row[1])) if row else None

    def place(self, part: Path, relpath: str, facts: dict[str, str]) -> tuple[int, int] | None:
        """Upload the verified partial to its final key: one PUT (atomic) or a multipart
        upload (visible only when completed); then the partial goes."""
        size = part.stat().st_size
        etag = self.s3.put_file(relpath, part, facts)
        self._set(relpath, (size, etag))
        return size, etag_int(etag)

    def sync(self, reldirs: Iterable[str]) -> None:
        """Nothing to do: an object is durable when its PUT is answered."""

    def move(self, old: str, new: str) -> None:
        """CopyObject (metadata kept) then DeleteObject."""
        row = self._row(old)
        self.s3.rename(old, new)
        self._set(old, None)
        self._set(new, row)

    def remove(self, relpath: str) -> None:
        self.s3.delete(relpath)
        self._set(relpath, None)

    def prune(self, relpath: str) -> None:
        """Buckets have no directories."""

    def digest(self, relpath: str) -> FileDigest:
        if self._row(relpath) is None:
            raise FileNotFoundError(relpath)
        sha = hashlib.sha256()
        size = 0
        try:
            for chunk in self.s3.read_chunks(relpath):
                sha.update(chunk)
                size += len(chunk)
        except BucketError as exc:
            raise FileNotFoundError(exc.message) from exc
        return FileDigest(sha.hexdigest(), size)

    def walk(self) -> Iterator[str]:
        for key, _size, _etag in self.keys():
            if key != INDEX_KEY and not key.startswith(META_DIR + "/"):
                yield key

    def has_index(self) -> bool:
        return self._row(INDEX_KEY) is not None

    def upload(self, key: str, local: Path) -> str:
        """A bookkeeping object (index, state) from a local file."""
        etag = self.s3.put_file(key, local, {})
        self._set(key, (local.stat().st_size, etag))
        return etag

    def abort_uploads(self) -> list[Upload]:
        """Abort every in-progress multipart upload under the prefix: the lock says nobody
        else writes here, so they are a killed run's leftovers."""
        prefix = self.s3.prefix + "/" if self.s3.prefix else ""
        ups = self.s3.list_uploads("")
        for up in ups:
            if up.key.startswith(prefix):
                self.s3.abort_upload(up)
        return ups


__all__ = ["BucketDest", "bucket_url", "default_work_dir", "etag_int", "is_bucket_url",
           "normalise_url", "META_DIR", "INDEX_KEY"]
