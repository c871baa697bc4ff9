"""Talking to storage: the signed URL of one file, and one storage GET through the retry
engine, its status read once (``open_answer``) for transfers, ranges and the size probe.

The signed URL is resolved through the download view once per file and shared by every
range of a parallel transfer; a 403/400 from storage (an expired or refused signature)
sends the next attempt through the download view again, and a refused download key is
re-minted through the detail endpoint (never more than a few times).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ohpub.model.cancel import CancelToken
from ohpub.model.errors import (
    KeyRefusedError,
    NetworkError,
    NotFoundError,
    OhpubError,
    ServerError,
    UnavailableError,
)
from ohpub.model.records import DataFile
from ohpub.remote import http
from ohpub.remote.client import ApiClient as Client
from ohpub.remote.http import (
    RETRY_STATUSES,
    Failure,
    Retrier,
    failure_of,
    gave_up_note,
    parse_content_range,
    parse_retry_after,
)

if TYPE_CHECKING:
    import requests

MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
"""The ETag of a single-part upload is the MD5 of its bytes; a ``-N`` suffix is not."""
REFUSALS = 3
"""Refused this many times, also with fresh links, the object is not readable."""


class Source:
    """The signed storage URL of one file, resolved once and shared; thread-safe."""

    def __init__(
        self,
        client: Client,
        f: DataFile,
        refresh: Callable[[int], DataFile],
        key_max_age: float,
    ) -> None:
        self.client = client
        self.record = f
        self._refresh_fn = refresh
        self.key_max_age = key_max_age
        self._url: str | None = None
        self._lock = threading.Lock()
        self.denied = 0

    def url(self) -> str:
        with self._lock:
            if self._url is None:
                self._url = self._resolve()
            return self._url

    def _resolve(self) -> str:
        if time.time() - self.record.listed_at > self.key_max_age:
            self.record = self._refresh()
        for _ in range(REFUSALS):
            try:
                return self.client.resolve_download(self.record)
            except KeyRefusedError:
                self.record = self._refresh()
        return self.client.resolve_download(self.record)

    def _refresh(self) -> DataFile:
        """Mint a fresh key through the detail endpoint; a 404 there means gone."""
        try:
            return self._refresh_fn(self.record.id)
        except NotFoundError:
            raise UnavailableError(
                f"file {self.record.id} is no longer public (detail answered 404)"
            ) from None

    def refused(self, url: str, status: int) -> None:
        """Storage refused ``url``: the next attempt resolves a fresh one."""
        with self._lock:
            if self._url != url:
                return  # another range already saw this URL refused
            self._url = None
            self.denied += 1
            if self.denied >= REFUSALS:
                raise UnavailableError(
                    f"file {self.record.id}: storage answered {status} {self.denied} times, "
                    "also with fresh links"
                )


@dataclass
class Answer:
    """A storage answer worth reading: 200, 206 or 416, with its slot held until closed."""

    resp: requests.Response
    status: int
    etag: str | None
    total: int | None
    first: int
    """Offset of the first body byte (0 for a 200)."""
    ranges: bool
    """The storage says it serves byte ranges (``Accept-Ranges: bytes``)."""
    end: int | None = None
    """Offset just past the last body byte, when known."""
    consumed: int = 0
    """Body bytes read so far (by a reader that keeps count)."""
    slot: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def close(self) -> None:
        try:
            self.resp.close()
        finally:
            self.slot.close()

    def __enter__(self) -> Answer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def storage_retrier(policy: Any, f: DataFile, cancel: CancelToken | None = None) -> Retrier:
    """The retry engine of one file's storage requests (``cancel``: the run's token)."""

    def give_up(failure: Failure, attempts: int) -> OhpubError:
        return NetworkError(f"file {f.id}: {failure.reason} ({gave_up_note(failure, attempts)})")

    return Retrier(policy, "", give_up, cancel=cancel)


def open_answer(
    source: Source,
    headers: dict[str, str],
    retry: Retrier,
    slots: Any,
) -> Answer:
    """One storage GET, retried until it answers 200, 206 or 416 (the one place that
    reads storage statuses). ``slots`` bounds the storage connections (held by the Answer);
    waiting for one gives up when ``retry``'s token is cancelled."""
    fid = source.record.id
    while True:
        url = source.url()
        slot = contextlib.ExitStack()
        slot.enter_context(retry.cancel.holding(slots))
        try:
            resp = source.client.open_storage(url, headers)
        except http.TRANSPORT_ERRORS as exc:
            slot.close()
            retry.wait(failure_of(exc, url), url)
            continue
        except BaseException:
            slot.close()
            raise
        status = resp.status_code
        retry.url = url
        if status in (200, 206, 416):
            try:
                return _answer(fid, resp, slot)
            except BaseException:
                resp.close()
                slot.close()
                raise
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        resp.close()
        slot.close()
        if status in (403, 400):
            source.refused(url, status)
        elif status in (404, 410):
            raise UnavailableError(f"file {fid}: storage answered {status}")
        elif status not in RETRY_STATUSES:
            raise ServerError(f"file {fid}: unexpected HTTP {status} from storage")
        retry.wait(Failure(f"storage answered {status}", retry_after, status=status), url)


def _answer(fid: int, resp: requests.Response, slot: contextlib.ExitStack) -> Answer:
    status = resp.status_code
    ranges = "bytes" in resp.headers.get("Accept-Ranges", "").lower()
    if status == 200:
        total = _int(resp.headers.get("Content-Length"))
        return Answer(resp, 200, etag_of(resp), total, 0, ranges, total, slot=slot)
    cr = parse_content_range(resp.headers.get("Content-Range"))
    if status == 416:
        total = cr.total if cr is not None else _size_from_s3_error(resp)
        return Answer(resp, 416, etag_of(resp), total, 0, True, 0, slot=slot)
    if cr is None or cr.first is None:
        raise ServerError(f"file {fid}: storage sent 206 without a usable Content-Range")
    end = None if cr.last is None else cr.last + 1
    return Answer(resp, 206, etag_of(resp), cr.total, cr.first, True, end, slot=slot)


def etag_of(resp: requests.Response) -> str | None:
    value = resp.headers.get("ETag")
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None


def _int(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _size_from_s3_error(resp: requests.Response) -> int | None:
    """A 416 without Content-Range: S3's XML error names the object size."""
    try:
        head = resp.raw.read(4096, decode_content=False)
    except http.TRANSPORT_ERRORS:
        return None
    m = re.search(rb"<ActualObjectSize>(\d+)</ActualObjectSize>", head)
    return int(m.group(1)) if m else None


__all__ = ["Answer", "MD5_ETAG", "Source", "etag_of", "open_answer", "storage_retrier"]
