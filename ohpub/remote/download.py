"""A file's bytes, as Open Humans hands them out: its download view, then the storage.

A record's ``download_url`` is a view on Open Humans itself that answers a 302 to a signed
storage URL (minting it costs the site a request, so it goes through the client's request
limit and retries: ``ApiClient.resolve_download``); the storage then serves the bytes,
outside that limit (``ApiClient.open_storage``, bounded by the caller). This module reads
the view's answer, and sends the storage GET with redirects followed by hand, each checked
to be http(s), and with an object key's ``.`` or ``..`` sent as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit, urlunsplit

from ohpub.model.errors import KeyRefusedError, ServerError, UnavailableError
from ohpub.model.records import DataFile
from ohpub.remote.http import redact

if TYPE_CHECKING:
    import requests

REDIRECTS = (301, 302, 303, 307, 308)


def read_view(resp: requests.Response) -> tuple[int, str, str]:
    """The download view's answer: its status, ``Location`` and (for an error) the start
    of its body, read while the client's request slot is held."""
    body = resp.text[:2000] if resp.status_code >= 400 else ""
    return resp.status_code, resp.headers.get("Location", ""), body


def storage_url(f: DataFile, status: int, location: str, body: str) -> str:
    """The signed storage URL the view redirected to, or the error its answer means."""
    if status in REDIRECTS:
        target = urljoin(f.download_url, location)
        check_http_url(target, f.id)
        return target
    if status == 403 and "unavailable" in body.lower():
        raise UnavailableError(f"file {f.id} is unavailable on Open Humans")
    if status == 403:
        raise KeyRefusedError(f"file {f.id}: download key refused")
    if status == 404:
        raise UnavailableError(f"file {f.id}: download view answered 404")
    raise ServerError(f"file {f.id}: unexpected HTTP {status} from the download view")


def open_storage(
    session: requests.Session,
    timeout: tuple[float, float],
    url: str,
    headers: dict[str, str],
    max_hops: int,
) -> requests.Response:
    """GET the storage URL as a raw stream; redirects are followed by hand (http(s) only)."""
    for _ in range(max_hops + 1):
        resp = session.get(
            _keep_dot_segments(url),
            headers=headers,
            stream=True,
            timeout=timeout,
            allow_redirects=False,
        )
        if resp.status_code in REDIRECTS:
            resp.close()
            url = urljoin(url, resp.headers.get("Location", ""))
            check_http_url(url, None)
            continue
        return resp
    raise ServerError(f"too many redirects fetching {redact(url)}")


def _keep_dot_segments(url: str) -> str:
    """An object key may end in an uploader's basename ``.`` or ``..``; an HTTP client would
    resolve those as dot segments and ask for another object. Percent-encoded, they are sent
    as they are (and the storage decodes them back)."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    if not any(s in (".", "..") for s in segments):
        return url
    path = "/".join({".": "%2E", "..": "%2E%2E"}.get(s, s) for s in segments)
    return urlunsplit(parts._replace(path=path))


def check_http_url(url: str, file_id: int | None) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        what = f"file {file_id}: " if file_id is not None else ""
        raise ServerError(f"{what}refusing redirect to a non-http(s) URL ({parts.scheme or '?'}:)")


__all__ = ["check_http_url", "open_storage", "read_view", "storage_url"]
