"""``verify``, ``status`` and ``index`` of a mirror in ``s3://bucket/prefix``.

verify holds the bucket's lock (as the local verify holds DEST's), lists the prefix once,
reads every tracked object in full against its recorded sha256, records what it found in
the state (so the next mirror downloads modified and missing objects again) and uploads
the state. status reads only the state object and the lock object: no object body.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ohpub.bucket.bookkeeping import STATE_KEY, pull, push
from ohpub.bucket.lock import BucketLock, read_holder
from ohpub.bucket.objects import INDEX_KEY, BucketDest
from ohpub.local.lock import DestLock
from ohpub.local.state import FileState, StateDB, ensure_dirs, state_db_path
from ohpub.model.errors import UsageError
from ohpub.ops.status import MirrorStatus, Running, mirror_status
from ohpub.ops.verify import CHECKED, VerifyRecord, VerifyResult, _batches, _record


def _opened(url: str, work: Path) -> BucketDest:
    bucket = BucketDest(url, work)
    bucket.s3.check()
    ensure_dirs(work)
    return bucket


def _not_a_mirror(url: str) -> UsageError:
    return UsageError(f"{url} is not an ohpub mirror (no {STATE_KEY})",
                      hint="run 'ohpub mirror' into it first")


def _check(bucket: BucketDest, fs: FileState) -> VerifyRecord:
    assert fs.path is not None
    path = Path(fs.path)
    try:
        digest = bucket.digest(fs.path)
    except FileNotFoundError:
        return VerifyRecord(fs.id, path, "missing", expected_sha256=fs.sha256)
    ok = digest.sha256 == fs.sha256 and digest.size == fs.size
    status = "ok" if ok else "modified"
    return VerifyRecord(fs.id, path, status, digest.size, digest.sha256, fs.sha256)


def verify_bucket(
    url: str, work: Path, on_record: Callable[[VerifyRecord], None], *, keep: bool = False
) -> VerifyResult:
    """The bucket's verify (see the module docstring); with ``keep`` the result holds every
    record too, as the local verify's does."""
    report = VerifyResult()
    emit = report.emitter(on_record, keep=keep)
    bucket = _opened(url, work)
    try:
        with DestLock(work, command="verify"), BucketLock(bucket.s3, command="verify"):
            bucket.load_listing()
            row = bucket._row(STATE_KEY)
            if not pull(bucket, state_db_path(work), row[1] if row else None):
                raise _not_a_mirror(url)
            tracked: set[str] = set()
            with StateDB.open(work, create=False) as state, \
                    ThreadPoolExecutor(max_workers=4) as pool:
                for batch in _batches(state.iter_all(), 1000):
                    tracked.update(fs.path for fs in batch if fs.path)
                    placed = {fs.id: fs for fs in batch if fs.path and fs.status in CHECKED}
                    recs = list(pool.map(lambda fs: _check(bucket, fs), placed.values()))
                    for rec in recs:
                        report.bytes += rec.bytes or 0
                        emit(rec)
                    _record(state, placed, recs)
            push(bucket, state_db_path(work))
            report.recorded = True
            for key in bucket.walk():
                if key not in tracked:
                    emit(VerifyRecord(None, Path(key), "untracked"))
    finally:
        bucket.close()
    return report


def bucket_status(url: str, work: Path, *, max_age: float | None) -> MirrorStatus:
    """The bucket's status from its state object and lock object (no object body)."""
    bucket = _opened(url, work)
    head = bucket.s3.head(STATE_KEY)
    if not pull(bucket, state_db_path(work), head.etag if head else None) or head is None:
        raise _not_a_mirror(url)
    st = mirror_status(work, max_age=max_age)
    holder = read_holder(bucket.s3)
    if holder is not None:
        pid = holder.get("pid")
        command = str(holder.get("command") or "") or None
        running = Running(command, pid if isinstance(pid, int) else None)
        st = dataclasses.replace(st, running=running)
    return st


def bucket_index(url: str) -> list[dict[str, Any]]:
    """The records of ``prefix/index.jsonl``."""
    import json

    bucket = BucketDest(url, Path("."))
    got = bucket.s3.get_bytes(INDEX_KEY)
    if got is None:
        raise UsageError(f"{url} has no index.jsonl", hint="is it an ohpub mirror?")
    return [json.loads(line) for line in got[0].decode("utf-8").splitlines() if line.strip()]


__all__ = ["verify_bucket", "bucket_status", "bucket_index"]
