"""A mirror run into ``s3://bucket/prefix``: the same run, with the bucket as destination.

The local half lives in the work directory (``MirrorOptions.dest``): partials are resumed
and verified there exactly as in a tree, and the state database is a working copy. The
bookkeeping kept with the mirror is ``prefix/.ohpub/state.sqlite3``, uploaded at the end of
every run (also a failed or interrupted one). Between two uploads the objects themselves
are the journal: each carries its id, sha256, md5 and ``created`` as user metadata, so on
start any object the state does not know at its key (a run killed after placing it, or a
fresh machine and no state object) is adopted from one HEAD, and nothing is downloaded
from Open Humans again. A crash thus loses no placed file, at the price of a HEAD per
adopted object; uploading the database per batch would cost a PUT of the whole database
(megabytes on a big mirror) every 64 files.

Order: check the bucket (one listing request: a wrong key, secret, bucket or endpoint
stops here, exit 2, nothing written), the local lock of the work directory, the bucket's
lock object, abort leftover multipart uploads, list the prefix once, bring the state up
to date, run, write ``index.jsonl``, upload the state, release.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path

from ohpub.bucket.bookkeeping import STATE_KEY, pull, push
from ohpub.bucket.lock import BucketLock
from ohpub.bucket.objects import INDEX_KEY, BucketDest
from ohpub.local.index import INDEX_NAME, write_index
from ohpub.local.lock import DestLock
from ohpub.local.state import FileState, StateDB, ensure_dirs, state_db_path
from ohpub.local.tree import forget_partial
from ohpub.mirror.types import MirrorOptions, MirrorSummary
from ohpub.model.cancel import CancelToken, DaemonPool
from ohpub.model.errors import UsageError
from ohpub.model.hashing import FileDigest

log = logging.getLogger("ohpub")

GRACE = 1.0
"""Seconds a cancelled run waits for the uploads in flight (as ``mirror.run.GRACE`` waits
for the download workers)."""


class BucketTarget:
    """The mirror's ``Destination`` for a bucket: ``BucketDest`` plus the local half
    (dropping the partial once uploaded, writing the index through the work dir).

    A batch's uploads run at once, ``jobs`` at a time (``prepare``), on threads of their
    own while the download workers go on; the main thread's ``place`` waits for each and
    then, as in a tree, records the batch in one state transaction. Why here and not in
    the download worker: a worker does not know a file's final key until the listing is
    complete and ``reconcile`` has moved the files in the way (an upload before that could
    overwrite an object about to be renamed), and uploading to a staging key first would
    cost a server-side copy and a delete per file (three requests instead of one, and a
    second pass over every byte of a big object). Each upload is still one PUT or a
    multipart upload completed only when every part is in: an object appears at its final
    key only complete, from a verified partial. A run killed after an upload but before
    the state transaction leaves an object the next run adopts from its metadata.

    That is also why a signal may cut a batch here, unlike in a tree: ``place`` waits for
    an upload on ``cancel`` (the client's token, which Ctrl-C cancels), so Ctrl-C during
    uploads stops the run at once. The batch's uploads not yet recorded are adopted by the
    next run, and an upload still in flight is on a ``DaemonPool`` thread that does not
    hold the process up: a PUT cut off before its last byte leaves no object (one that
    arrived whole is complete, and adopted), and a multipart upload never completed is
    aborted by the next run."""

    def __init__(
        self, bucket: BucketDest, jobs: int = 8, cancel: CancelToken | None = None
    ) -> None:
        self.bucket = bucket
        self.root = bucket.root
        self.cancel = cancel or CancelToken()
        self._pool = DaemonPool(jobs, "ohpub-upload")
        self._uploads: dict[str, Future[tuple[int, int] | None]] = {}
        self._closed = False

    def describe(self) -> str:
        return self.bucket.describe()

    def fingerprint(self, relpath: str) -> tuple[int, int] | None:
        return self.bucket.fingerprint(relpath)

    def prepare(self, batch: list[tuple[Path, str, dict[str, str]]]) -> None:
        for part, relpath, facts in batch:
            self._uploads[relpath] = self._pool.submit(self.bucket.place, part, relpath, facts)

    def place(self, part: Path, relpath: str, facts: dict[str, str]) -> tuple[int, int] | None:
        fut = self._uploads.pop(relpath, None)
        fp = self.cancel.result(fut) if fut is not None else self.bucket.place(part, relpath, facts)
        forget_partial(part, root=self.root)
        return fp

    def close(self) -> None:
        """Wait for uploads still running (a failed batch's), then stop the threads; after
        a cancel (Ctrl-C), ``GRACE`` seconds at most. Once: ``run_into_bucket`` calls it
        before the state goes up, and again on its way out."""
        if self._closed:
            return
        self._closed = True
        if not self._pool.shutdown(wait=GRACE if self.cancel.cancelled else None):
            log.debug("uploads still in flight when the run ended; left to their threads")
        self._uploads.clear()

    def sync(self, reldirs: Iterable[str]) -> None:
        self.bucket.sync(reldirs)

    def move(self, old: str, new: str) -> None:
        self.bucket.move(old, new)

    def remove(self, relpath: str) -> None:
        self.bucket.remove(relpath)

    def prune(self, relpath: str) -> None:
        self.bucket.prune(relpath)

    def digest(self, relpath: str) -> FileDigest:
        return self.bucket.digest(relpath)

    def walk(self) -> Iterator[str]:
        return self.bucket.walk()

    def has_index(self) -> bool:
        return self.bucket.has_index()

    def write_index(self, state: StateDB) -> None:
        write_index(self.root, state)
        self.bucket.upload(INDEX_KEY, self.root / INDEX_NAME)


def open_bucket(url: str, work_dir: Path) -> BucketDest:
    """The bucket, checked with one listing request before anything is written."""
    bucket = BucketDest(url, work_dir)
    bucket.s3.check()
    return bucket


def pull_state(bucket: BucketDest) -> None:
    """Bring the work directory's state up to the bucket's (after ``load_listing``)."""
    row = bucket._row(STATE_KEY)
    pull(bucket, state_db_path(bucket.root), row[1] if row else None)


def push_state(bucket: BucketDest) -> None:
    push(bucket, state_db_path(bucket.root))


def adopt(bucket: BucketDest, state: StateDB) -> int:
    """Objects carrying ohpub's metadata at keys the state does not know: recorded as
    placed (one HEAD each), so the run keeps them instead of downloading them."""
    known = {p for _fid, p, _st in state.iter_paths() if p}
    n = 0
    for key in bucket.walk():
        if key in known:
            continue
        head = bucket.s3.head(key)
        if head is None or not head.metadata.get("ohpub-id", "").isdigit():
            continue  # not ours: an untracked object
        fs = state.get(int(head.metadata["ohpub-id"])) or _blank(key, head.metadata)
        fs.path, fs.size = key, head.size
        fp = bucket.fingerprint(key)
        fs.mtime_ns = fp[1] if fp else None
        fs.sha256 = head.metadata.get("ohpub-sha256")
        fs.md5 = head.metadata.get("ohpub-md5")
        fs.status = "present"
        state.put(fs)
        n += 1
    if n:
        log.info("%s: adopted %d objects from their metadata", bucket.url, n)
    return n


def _blank(key: str, meta: dict[str, str]) -> FileState:
    parts = key.split("/")
    project = parts[1] if len(parts) > 2 and parts[1].isdigit() else None
    now = time.time()
    return FileState(
        id=int(meta["ohpub-id"]), path=key, size=None, mtime_ns=None, sha256=None, md5=None,
        etag=None, basename=parts[-1], created=meta.get("ohpub-created", ""), user_id=None,
        username=parts[0] if len(parts) > 2 else None,
        project_id=int(project) if project else None, datatype_ids=[], metadata={},
        raw={}, first_seen=now, last_seen=now, downloaded_at=None, status="present",
    )


def run_into_bucket(
    opts: MirrorOptions,
    recorded: Callable[[StateDB], MirrorSummary],
    cancel: CancelToken | None = None,
) -> MirrorSummary:
    """``Mirror.run`` for an ``s3://`` DEST (see the module docstring); ``cancel``: the
    client's token, which Ctrl-C cancels (``BucketTarget``)."""
    assert opts.url is not None
    work = opts.dest
    if work.exists() and not work.is_dir():
        raise UsageError(f"--work-dir {work} exists and is not a directory")
    bucket = open_bucket(opts.url, work)
    ensure_dirs(work)
    target = opts.destination = BucketTarget(bucket, opts.jobs, cancel)
    try:
        with DestLock(work), BucketLock(bucket.s3):
            bucket.abort_uploads()
            bucket.load_listing()
            pull_state(bucket)
            try:
                with StateDB.open(work) as state:
                    adopt(bucket, state)
                    return recorded(state)
            finally:
                target.close()  # every upload answered before the state goes up
                try:
                    push_state(bucket)
                except Exception as exc:  # noqa: BLE001 - the run's own error matters more
                    log.warning("could not upload the state to %s: %s (the work directory "
                                "keeps it; the next run uploads it)", bucket.url, exc)
    finally:
        target.close()  # (again, if the lock was never taken: harmless)
        bucket.close()


def dry_into_bucket(
    opts: MirrorOptions, dry: Callable[[StateDB | None], MirrorSummary]
) -> MirrorSummary:
    """``Mirror.run`` with ``--dry-run`` for an ``s3://`` DEST: the plan against the bucket,
    nothing written to it (no lock object, no state upload: listings and GETs only) and
    nothing to the work directory (``opts.dest``, whose partials are only looked at).

    The listing table and a copy of the state object live in a scratch directory removed
    at the end; objects the state does not know are adopted into that copy (HEADs), so the
    plan is the one the real run would make."""
    assert opts.url is not None
    with tempfile.TemporaryDirectory(prefix="ohpub-dry-") as tmp:
        scratch = Path(tmp)
        bucket = open_bucket(opts.url, scratch)
        ensure_dirs(scratch)
        opts.destination = BucketTarget(bucket)
        try:
            bucket.load_listing()
            pull_state(bucket)
            with StateDB.open(scratch) as copy:
                adopt(bucket, copy)
            with StateDB.open(scratch, create=False, readonly=True) as state:
                return dry(state)
        finally:
            bucket.close()


__all__ = ["BucketTarget", "dry_into_bucket", "open_bucket", "pull_state", "push_state", "adopt",
           "run_into_bucket", "STATE_KEY"]
