"""HTTP plumbing shared by every request ohpub makes: error phrases, Retry-After,
and the redactor that keeps download keys and storage signatures out of every
message and log line."""

from __future__ import annotations

import re
import time

import requests
import urllib3

_SECRET_PARAM_RE = re.compile(
    # name, then "=" plain or percent-encoded (a signed URL inside another URL's query, as
    # in a redirect hop), then the value up to "&" (plain or encoded) or the end.
    r"(?i)(key|signature|awsaccesskeyid)(=|%3D|%253D)"
    r"((?:[^&\s#\"'%]|%(?!26|25)[0-9a-f]{2}|%25(?!26)[0-9a-f]{2})+)"
)


def redact(text: str) -> str:
    """Hide download keys and storage signatures whole: they are bearer tokens for an hour.

    Idempotent (a redacted text redacts to itself), so layers may redact again safely.
    """

    def _sub(m: re.Match[str]) -> str:
        return f"{m.group(1)}{m.group(2)}…"

    return _SECRET_PARAM_RE.sub(_sub, text)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def describe_exception(exc: BaseException) -> str:
    """A short human phrase for a requests/urllib3 failure (no stack, no secrets)."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(exc, requests.exceptions.ConnectionError):
        low = text.lower()
        if (
            "name or service not known" in low
            or "nodename nor servname" in low
            or ("failed to resolve" in low or "temporary failure in name resolution" in low)
        ):
            return "cannot resolve host name"
        if "refused" in low:
            return "connection refused"
        if "reset" in low:
            return "connection reset"
        return "connection failed"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection broken mid-body"
    # Raised by raw body reads (urllib3 itself, or the socket under it).
    if isinstance(exc, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return "read timed out"
    if isinstance(exc, (urllib3.exceptions.ProtocolError, ConnectionError)):
        return "connection reset" if "reset" in text.lower() else "connection broken mid-body"
    return type(exc).__name__


__all__ = ["redact", "parse_retry_after", "describe_exception"]
