"""One file: resolve the signed URL, stream it with resume, hash, verify, place.

Bytes go to a partial file first (``<part>``, with a small JSON sidecar that
remembers the storage ETag), hashed with sha256 and md5 as they arrive. An
interrupted transfer continues with ``Range: bytes=N-`` and ``If-Range: <etag>``,
so a changed object answers 200 and the partial is restarted instead of being
spliced. The partial only becomes a final file after its length and (for a plain
MD5 ETag) its checksum match, and after fsync, by an atomic rename.

Bytes are stored exactly as served: ``.gz`` objects come with
``Content-Encoding: gzip`` and must not be decoded, or the file and every Range
offset would be wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import requests
import urllib3

from ohpub import tree
from ohpub.api import Client
from ohpub.config import RetryPolicy
from ohpub.errors import (
    ChecksumError,
    KeyRefusedError,
    NetworkError,
    NotFoundError,
    OhpubError,
    ServerError,
    UnavailableError,
)
from ohpub.http import describe_exception, parse_retry_after
from ohpub.records import DataFile
from ohpub.tree import DiskError

log = logging.getLogger("ohpub")

CHUNK = 1024 * 1024
SMALL_OBJECT = 1024 * 1024
"""Up to this size a partial has no resume sidecar: resuming it would save one small
request, while the sidecar costs a write, a rename and an unlink per file."""
KEY_MAX_AGE = 50 * 60.0
"""Keys live one hour from the listing; re-mint before that rather than meet a 403."""
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_READ_ERRORS = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


@dataclass
class Downloaded:
    size: int
    sha256: str
    md5: str
    etag: str | None
    resumed: bool
    transferred: int
    record: DataFile
    """The record last used (a re-minted one when the key had to be refreshed)."""


ProgressFn = Callable[[int], None]


def _noop(nbytes: int) -> None:
    return None


class _Sink:
    """Where bytes go: a partial file (restartable) or a stream (append-only).

    Both digests are computed as bytes arrive. Once a transfer is large enough to be
    worth a thread, MD5 (the slower of the two, and single-threaded by nature) moves to
    a helper thread fed in order, so it runs beside the socket reads, the sha256 and the
    file writes on another core: hashlib releases the GIL on large buffers.
    """

    PARALLEL_AFTER = 4 * 1024 * 1024
    MAX_QUEUED = 8

    def __init__(self, fh: BinaryIO, *, restartable: bool, offset: int = 0) -> None:
        self.fh = fh
        self.restartable = restartable
        self.offset = offset
        self.sha256 = hashlib.sha256()
        self._md5 = hashlib.md5()
        self._md5_pool: ThreadPoolExecutor | None = None
        self._md5_queue: deque[Future[None]] = deque()
        self.skip = 0
        """Bytes of the next body to drop: an append-only sink met a 200 after a resume."""

    def write(self, data: bytes) -> None:
        if self.skip:
            drop = min(self.skip, len(data))
            self.skip -= drop
            data = data[drop:]
            if not data:
                return
        try:
            self.fh.write(data)
        except OSError as exc:
            raise DiskError(exc) from exc
        self.hash(data)
        self.offset += len(data)

    def hash(self, data: bytes) -> None:
        """Feed both digests; ``data`` must not change afterwards (bytes are immutable)."""
        self.sha256.update(data)
        if self._md5_pool is None and self.offset >= self.PARALLEL_AFTER:
            self._md5_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ohpub-md5")
        if self._md5_pool is None:
            self._md5.update(data)
            return
        self._md5_queue.append(self._md5_pool.submit(self._md5.update, data))
        while len(self._md5_queue) > self.MAX_QUEUED:
            self._md5_queue.popleft().result()

    def _drain(self) -> None:
        while self._md5_queue:
            self._md5_queue.popleft().result()

    def md5_hex(self) -> str:
        self._drain()
        return self._md5.hexdigest()

    def close(self) -> None:
        self._drain()
        if self._md5_pool is not None:
            self._md5_pool.shutdown(wait=True)
            self._md5_pool = None

    def restart(self) -> None:
        """The server sends the whole object again: start the file over, or skip the prefix."""
        if self.restartable:
            self._drain()
            try:
                self.fh.seek(0)
                self.fh.truncate()
            except OSError as exc:
                raise DiskError(exc) from exc
            self.offset = 0
            self.sha256 = hashlib.sha256()
            self._md5 = hashlib.md5()
        else:
            self.skip = self.offset


class TooLargeError(OhpubError):
    """The object is larger than --max-size; not an error of the run."""

    def __init__(self, file_id: int, size: int, limit: int) -> None:
        super().__init__(f"file {file_id}: {size} bytes is larger than --max-size ({limit} bytes)")
        self.size = size


class Downloader:
    """Downloads files through a ``Client``; safe to share between worker threads."""

    def __init__(
        self,
        client: Client,
        *,
        retry: RetryPolicy | None = None,
        key_max_age: float = KEY_MAX_AGE,
        refresh: Callable[[int], DataFile] | None = None,
        storage_slots: int | None = None,
    ) -> None:
        self.client = client
        self.retry = retry or client.retry
        self.key_max_age = key_max_age
        self.refresh = refresh or client.get_file
        self._storage_slots = (
            threading.BoundedSemaphore(storage_slots) if storage_slots else contextlib.nullcontext()
        )
        """Transfers from storage at once (``--jobs``); the download view has the client's own
        Open Humans limit, so the two loads are bounded separately."""

    # -- public ---------------------------------------------------------------------------

    def to_part(
        self,
        f: DataFile,
        part: Path,
        progress: ProgressFn = _noop,
        *,
        max_size: int | None = None,
        root: Path | None = None,
    ) -> Downloaded:
        """Download into ``part`` (resuming what is there), verified and fsynced.

        The partial and its sidecar are opened below ``root`` (DEST for a mirror; the
        target's folder by default) without following any symlink (tree.open_nofollow):
        a symlinked ``.ohpub/partial`` cannot lead the bytes outside DEST.
        """
        base = root if root is not None else part.parent
        rel = part.relative_to(base).as_posix()
        meta_path = tree.Below(base, rel + ".json")
        meta = _load_meta(meta_path, f.id)
        st = tree.lstat_within(base, rel)
        size = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None
        raw_etag = meta.get("etag")
        etag = raw_etag if isinstance(raw_etag, str) else None
        if size is None or etag is None:
            size = 0
        # Never follow a symlink planted at the partial's name (it could point anywhere).
        if st is not None and not stat.S_ISREG(st.st_mode):
            tree.remove_within(base, rel)
        fd = tree.open_nofollow(base, rel, os.O_RDWR | os.O_CREAT)
        fh = os.fdopen(fd, "r+b")
        with fh:
            fh.seek(size)
            fh.truncate()
            sink = _Sink(fh, restartable=True, offset=size)
            if size:
                _rehash(fh, size, sink)
                progress(size)
            try:
                with contextlib.closing(sink):
                    result = self._transfer(f, sink, etag, meta_path, progress, max_size)
                fh.flush()
                os.fsync(fh.fileno())
            except DiskError as exc:
                exc.message = exc.message.replace("cannot write:", f"cannot write {part}:")
                raise
            except OSError as exc:
                raise DiskError(exc, part) from exc
        # The sidecar stays until the caller has placed the file: if the run dies before
        # that, the next one finds a complete partial it can confirm with one request.
        return result

    def probe_size(self, f: DataFile) -> int | None:
        """The object's size, from a one-byte Range request (the API has no size field)."""
        url = self.client.resolve_download(f)
        try:
            resp = self.client.open_storage(
                url, {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
            )
        except _READ_ERRORS as exc:
            raise NetworkError(f"file {f.id}: {describe_exception(exc)}") from exc
        with resp:
            if resp.status_code in (403, 404, 410):
                raise UnavailableError(f"file {f.id}: storage answered {resp.status_code}")
            if resp.status_code == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "").strip())
                return int(m.group(3)) if m and m.group(3) != "*" else None
            if resp.status_code == 200:
                return _int(resp.headers.get("Content-Length"))
            if resp.status_code == 416:
                return _total_from_416(resp)
        return None

    def to_stream(self, f: DataFile, out: BinaryIO, progress: ProgressFn = _noop) -> Downloaded:
        """Stream the raw bytes to ``out`` (stdout); verified at the end, nothing to undo."""
        sink = _Sink(out, restartable=False)
        with contextlib.closing(sink):
            result = self._transfer(f, sink, None, None, progress)
        with contextlib.suppress(OSError, ValueError):
            out.flush()
        return result

    # -- the transfer loop ---------------------------------------------------------------------

    def _transfer(
        self,
        f: DataFile,
        sink: _Sink,
        etag: str | None,
        meta_path: tree.Below | None,
        progress: ProgressFn,
        max_size: int | None = None,
    ) -> Downloaded:
        policy = self.retry
        started_at = sink.offset
        resumed = sink.offset > 0
        transferred = 0
        url: str | None = None
        failures = 0
        refreshes = 0
        checksum_retries = 0
        denied = 0
        total: int | None = None
        deadline_start = time.monotonic()

        def fail(msg: str, retry_after: float | None = None) -> None:
            nonlocal failures
            failures += 1
            budget_used = time.monotonic() - deadline_start
            delay = policy.delay(failures - 1, retry_after)
            if failures >= policy.attempts or budget_used + delay > policy.budget:
                raise NetworkError(f"file {f.id}: {msg} (gave up after {failures} attempts)")
            log.debug("file %s: %s; retrying in %.1fs (%.0fs used)", f.id, msg, delay, budget_used)
            time.sleep(delay)

        while True:
            # 1. A fresh key when the listing is old, then the signed storage URL.
            if url is None:
                if time.time() - f.listed_at > self.key_max_age:
                    f = self._refresh(f)
                try:
                    url = self.client.resolve_download(f)
                except KeyRefusedError:
                    refreshes += 1
                    if refreshes > 3:
                        raise
                    f = self._refresh(f)
                    continue
            # 2. The storage request, resuming at the sink's offset when we have an ETag.
            headers = {"Accept-Encoding": "identity"}
            if sink.offset > 0 and etag:
                headers["Range"] = f"bytes={sink.offset}-"
                headers["If-Range"] = f'"{etag}"'
            elif sink.offset > 0 and sink.restartable:
                progress(-sink.offset)
                sink.restart()
            slot = contextlib.ExitStack()
            slot.enter_context(self._storage_slots)  # held until the body is read
            try:
                resp = self.client.open_storage(url, headers)
            except _READ_ERRORS as exc:
                slot.close()
                fail(describe_exception(exc))
                continue
            except BaseException:
                slot.close()
                raise
            with slot, resp:
                status = resp.status_code
                new_etag = _etag(resp)
                if status in (403, 400):
                    # An expired or refused signature: go through the download view again.
                    # Refused again and again with fresh links: the object is not readable.
                    denied += 1
                    if denied >= 3:
                        raise UnavailableError(
                            f"file {f.id}: storage answered {status} {denied} times, "
                            "also with fresh links"
                        )
                    url = None
                    fail(f"storage answered {status}")
                    continue
                if status in (404, 410):
                    raise UnavailableError(f"file {f.id}: storage answered {status}")
                if status == 416:
                    whole = _total_from_416(resp)
                    if whole is not None and whole == sink.offset and etag:
                        total = whole
                        if not (_MD5_ETAG.match(etag) and sink.md5_hex() != etag):
                            break
                        # The partial is complete but its bytes are wrong: start over.
                    progress(-sink.offset if sink.restartable else 0)
                    sink.restart()
                    etag = None
                    fail("416 range not satisfiable; restarting")
                    continue
                if status == 429 or status >= 500:
                    fail(
                        f"storage answered {status}",
                        parse_retry_after(resp.headers.get("Retry-After")),
                    )
                    continue
                if status == 200:
                    if sink.offset:
                        log.debug("file %s: server sent the whole object; restarting", f.id)
                        progress(-sink.offset if sink.restartable else 0)
                        sink.restart()
                        resumed = False
                    total = _int(resp.headers.get("Content-Length"))
                elif status == 206:
                    rng = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "").strip())
                    if not rng or int(rng.group(1)) != sink.offset:
                        raise ServerError(
                            f"file {f.id}: storage sent a Content-Range that does not continue "
                            f"at byte {sink.offset}"
                        )
                    total = None if rng.group(3) == "*" else int(rng.group(3))
                else:
                    raise ServerError(f"file {f.id}: unexpected HTTP {status} from storage")
                if max_size is not None and total is not None and total > max_size:
                    raise TooLargeError(f.id, total, max_size)
                if new_etag and new_etag != etag:
                    etag = new_etag
                    if meta_path is not None and (total is None or total > SMALL_OBJECT):
                        _save_meta(meta_path, f.id, etag, total)
                before = sink.offset + sink.skip
                try:
                    while True:
                        chunk = resp.raw.read1(CHUNK, decode_content=False)
                        if not chunk:
                            break
                        sink.write(chunk)
                        n = len(chunk)
                        transferred += n
                        progress(n)
                except _READ_ERRORS as exc:
                    made_progress = sink.offset + sink.skip > before
                    if made_progress:
                        failures = 0  # a retry that made progress does not use up the budget
                    fail(describe_exception(exc))
                    continue
            if total is not None and sink.offset < total:
                if sink.offset + sink.skip > before:
                    failures = 0
                fail(f"body ended at byte {sink.offset} of {total}")
                continue
            if total is not None and sink.offset > total:
                raise ServerError(f"file {f.id}: storage sent more bytes than it announced")
            # 3. Verify: the ETag of a single-part upload is the MD5 of the bytes.
            md5 = sink.md5_hex()
            if etag and _MD5_ETAG.match(etag) and md5 != etag:
                checksum_retries += 1
                if checksum_retries > 1 or not sink.restartable:
                    raise ChecksumError(
                        f"file {f.id} ({f.basename}): checksum mismatch "
                        f"(md5 {md5}, storage ETag {etag}); not saved"
                    )
                log.debug("file %s: md5 mismatch, downloading again from the start", f.id)
                progress(-sink.offset)
                sink.restart()
                resumed = False
                continue
            break
        return Downloaded(
            size=sink.offset,
            sha256=sink.sha256.hexdigest(),
            md5=sink.md5_hex(),
            etag=etag,
            resumed=resumed and started_at > 0,
            transferred=transferred,
            record=f,
        )

    def _refresh(self, f: DataFile) -> DataFile:
        """Mint a fresh key through the detail endpoint; a 404 there means gone."""
        try:
            return self.refresh(f.id)
        except NotFoundError:
            raise UnavailableError(
                f"file {f.id} is no longer public (detail answered 404)"
            ) from None


# -- small helpers ----------------------------------------------------------------------------


def _etag(resp: requests.Response) -> str | None:
    value = resp.headers.get("ETag")
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None


def _int(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _total_from_416(resp: requests.Response) -> int | None:
    m = re.match(r"^bytes \*/(\d+)$", resp.headers.get("Content-Range", "").strip())
    if m:
        return int(m.group(1))
    b = re.search(rb"<ActualObjectSize>(\d+)</ActualObjectSize>", resp.content[:4096])
    return int(b.group(1)) if b else None


def _rehash(fh: BinaryIO, size: int, sink: _Sink) -> None:
    """Hash the bytes a previous run left; a resume must verify the whole file."""
    fh.seek(0)
    left = size
    while left:
        data = fh.read(min(CHUNK, left))
        if not data:
            break
        sink.hash(data)
        left -= len(data)
    fh.seek(size)


def _load_meta(path: tree.Below, file_id: int) -> dict[str, object]:
    data = tree.read_nofollow(path.root, path.rel, 64 * 1024)
    try:
        meta = json.loads(data) if data is not None else {}
    except ValueError:
        return {}
    if not isinstance(meta, dict) or meta.get("id") != file_id:
        return {}
    return meta


def _save_meta(path: tree.Below, file_id: int, etag: str, total: int | None) -> None:
    data = json.dumps({"id": file_id, "etag": etag, "total": total}).encode()
    tree.write_atomic(path.root, path.rel, [data])  # fresh tmp, no symlink followed


__all__ = ["Downloaded", "Downloader", "TooLargeError"]
