"""HTTP plumbing shared by every request ohpub makes.

- ``redact``: the one redactor; download keys and storage signatures (SigV2 and SigV4)
  never reach a message or a log line.
- ``Retrier``: the one retry engine. Listing pages, the detail endpoint, the download view
  and storage transfers all wait and give up through it. Its attempts AND its time budget
  restart whenever bytes arrive (``progress``), so a long transfer that keeps moving is
  never given up on for having run longer than the budget in all.
- ``RETRY_STATUSES`` and ``retry_limit``: the one table of what is retried.
- ``parse_content_range``: the one Content-Range parser (206 and 416 answers).
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ohpub.model.cancel import CancelToken
from ohpub.model.config import RetryPolicy
from ohpub.model.lazy import lazy_import

if TYPE_CHECKING:
    import http.client as http_client
    import ssl

    import requests
    import urllib3
else:  # imported on first use: commands that make no request never load the HTTP stack
    http_client = lazy_import("http.client")
    ssl = lazy_import("ssl")
    requests = lazy_import("requests")
    urllib3 = lazy_import("urllib3")

T = TypeVar("T")

retry_log = logging.getLogger("ohpub.retry")

# -- the redactor ------------------------------------------------------------------------------

_SECRET_NAMES = (
    r"key|signature|awsaccesskeyid"
    r"|x-amz-credential|x-amz-signature|x-amz-security-token"
)
_SECRET_PARAM_RE = re.compile(
    # name, then "=" plain or percent-encoded (a signed URL inside another URL's query, as
    # in a redirect hop), then the value up to "&" (plain or encoded) or the end. A longer
    # name ending in one of these (``x-oh-key``) is hidden too: over-hiding is harmless.
    r"(?i)(" + _SECRET_NAMES + r")(=|%3D|%253D)"
    r"((?:[^&\s#\"'%]|%(?!26|25)[0-9a-f]{2}|%25(?!26)[0-9a-f]{2})+)"
)


def redact(text: str) -> str:
    """Hide download keys and storage signatures whole: they are bearer tokens for an hour.

    Covers ``key``, ``Signature`` and ``AWSAccessKeyId`` (SigV2) and ``X-Amz-Credential``,
    ``X-Amz-Signature`` and ``X-Amz-Security-Token`` (SigV4), plain or percent-encoded (a
    signed URL inside another URL). Idempotent (a redacted text redacts to itself), so
    layers may redact again safely.
    """

    def _sub(m: re.Match[str]) -> str:
        return f"{m.group(1)}{m.group(2)}…"

    return _SECRET_PARAM_RE.sub(_sub, text)


# -- Content-Range ------------------------------------------------------------------------------

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.I)


@dataclass(frozen=True)
class ContentRange:
    """``bytes first-last/total`` (206) or ``bytes */total`` (416: first and last None)."""

    first: int | None
    last: int | None
    total: int | None


def parse_content_range(value: str | None) -> ContentRange | None:
    """The one Content-Range parser; None for a missing or malformed header."""
    m = _CONTENT_RANGE.match(value or "")
    if m is None:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    if m.group(1) is None:
        return None if total is None else ContentRange(None, None, total)
    first, last = int(m.group(1)), int(m.group(2))
    if last < first or (total is not None and last >= total):
        return None
    return ContentRange(first, last, total)


# -- what is retried --------------------------------------------------------------------------

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Answers worth another attempt (everything else is the caller's to interpret)."""

TRANSPORT_ERRORS: tuple[type[BaseException], ...]
"""Exceptions of a request or of a body read; ``retry_limit`` says how often to retry.
Made on first use (it names the HTTP stack's classes): modules on the way of commands that
make no request read it as ``http.TRANSPORT_ERRORS`` in their ``except`` clauses, which
Python evaluates only when something was raised."""


def __getattr__(name: str) -> Any:
    if name == "TRANSPORT_ERRORS":
        errors = (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            http_client.HTTPException,
            ssl.SSLError,
            ConnectionError,
            TimeoutError,
        )
        globals()[name] = errors
        return errors
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def retry_limit(exc: BaseException) -> int | None:
    """Attempts allowed for a transport failure: None for the policy's, 1 for none.

    Not retried: a host name that does not resolve (the network is down or the name is
    wrong; waiting does not help and the user should know at once), a TLS certificate
    that does not verify, and a malformed URL.
    """
    if _is_name_failure(exc) or _is_cert_failure(exc):
        return 1
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return 1
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(out) < 8:
        out.append(cur)
        nxt = cur.__cause__ or cur.__context__
        if nxt is None and cur.args and isinstance(cur.args[0], BaseException):
            nxt = cur.args[0]
        reason = getattr(cur, "reason", None)
        cur = reason if isinstance(reason, BaseException) and reason not in out else nxt
    return out


def _is_name_failure(exc: BaseException) -> bool:
    if any(isinstance(e, urllib3.exceptions.NameResolutionError) for e in _causes(exc)):
        return True
    low = str(exc).lower()
    return any(
        s in low
        for s in (
            "name or service not known",
            "nodename nor servname",
            "failed to resolve",
            "temporary failure in name resolution",
            "no address associated",
        )
    )


def _is_cert_failure(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLCertVerificationError) for e in _causes(exc)) or (
        isinstance(exc, requests.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc)
    )


def describe_exception(exc: BaseException, url: str | None = None) -> str:
    """A short human phrase for a transport failure (no stack, no secrets).

    With ``url``, a name that does not resolve is named: "cannot resolve host name X".
    """
    text = str(exc).lower()
    if _is_name_failure(exc):
        host = urlsplit(url).hostname if url else None
        return f"cannot resolve host name {host}" if host else "cannot resolve host name"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timed out"
    if _is_cert_failure(exc):
        return "TLS certificate not trusted"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(exc, requests.exceptions.ConnectionError):
        if "refused" in text:
            return "connection refused"
        if "reset" in text:
            return "connection reset"
        return "connection failed"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection broken mid-body"
    # Raised by raw body reads (urllib3, http.client, or the socket under them).
    if isinstance(exc, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return "read timed out"
    broken = (urllib3.exceptions.ProtocolError, ConnectionError, http_client.HTTPException)
    if isinstance(exc, broken):
        return "connection reset" if "reset" in text else "connection broken mid-body"
    return type(exc).__name__


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# -- the retry engine --------------------------------------------------------------------------


@dataclass
class Failure:
    """One failed attempt: what to say, and what the answer asked for."""

    reason: str
    retry_after: float | None = None
    limit: int | None = None
    """At most this many attempts for this kind of failure (None: the policy's)."""
    status: int | None = None


def failure_of(exc: BaseException, url: str | None = None) -> Failure:
    return Failure(describe_exception(exc, url), limit=retry_limit(exc))


GiveUp = Callable[[Failure, int], BaseException]
"""Builds the exception to raise: (last failure, attempts made) -> exception."""


class Retrier:
    """Attempts and a time budget for one request, both restarted by ``progress()``.

    ``wait(failure)`` sleeps a backoff with full jitter (or the server's Retry-After) and
    returns, or raises ``give_up(failure, attempts)`` when the attempts in a row without
    progress reach ``policy.attempts``, or the time since the last progress plus the wait
    would pass ``policy.budget``. Each retry logs ONE line at WARNING on ``ohpub.retry``:
    ``GET <url> failed (<reason>); retry 2 of 5 in 4 s`` (the URL redacted).

    ``cancel`` (``model.cancel``) ends the wait at once: a cancelled token raises
    ``Cancelled`` from ``wait`` (before, or in the middle of, its sleep) and from
    ``progress`` (which every read that brings bytes calls), so a request stops at its next
    wait or its next buffer, however long the server asked it to wait.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        url: str,
        give_up: GiveUp,
        *,
        method: str = "GET",
        sleep: Callable[[float], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self.policy = policy
        self.url = url
        self.method = method
        self.give_up = give_up
        self.failures = 0
        self.since = time.monotonic()
        self.cancel = cancel if cancel is not None else CancelToken()
        self._sleep = sleep if sleep is not None else self.cancel.sleep

    def progress(self) -> None:
        """Bytes arrived: the next failure is the first of a new streak (or, cancelled,
        ``Cancelled``)."""
        self.cancel.check()
        self.failures = 0
        self.since = time.monotonic()

    def wait(self, failure: Failure, url: str | None = None) -> None:
        """Back off before the next attempt, or raise when this was the last one (or when
        nobody waits for the answer any more: see ``abandoned``); ``Cancelled`` when the
        token is cancelled, before or during the wait."""
        self.cancel.check()
        stop = _ABANDONED.get()
        if stop is not None and stop.is_set():
            raise self.give_up(failure, self.failures + 1)
        self.failures += 1
        attempts = self.policy.attempts
        if failure.limit is not None:
            attempts = min(attempts, failure.limit)
        delay = self.policy.delay(self.failures - 1, failure.retry_after)
        spent = time.monotonic() - self.since
        if self.failures >= attempts or spent + delay > self.policy.budget:
            raise self.give_up(failure, self.failures)
        retry_log.warning(
            "%s %s failed (%s); retry %d of %d in %s",
            self.method,
            redact(url or self.url),
            failure.reason,
            self.failures,
            attempts - 1,
            _seconds(delay),
        )
        self._sleep(delay)


_ABANDONED: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "ohpub_abandoned", default=None
)


def abandonable(stop: threading.Event, call: Callable[[], T]) -> Callable[[], T]:
    """``call`` run so that every retry inside it gives up at once (no wait, no retry
    line) after ``stop`` is set: a prefetched listing page whose consumer has gone (say
    ``--limit``) must not keep retrying against a server for minutes."""

    def run() -> T:
        token = _ABANDONED.set(stop)
        try:
            return call()
        finally:
            _ABANDONED.reset(token)

    return run


def _seconds(delay: float) -> str:
    if delay >= 10:
        return f"{delay:.0f} s"
    return f"{delay:.1f} s" if delay >= 0.1 else f"{delay:.2f} s"


def gave_up_note(failure: Failure, attempts: int) -> str:
    """The tail of a final error message: "gave up after 3 attempts", or "not retried"
    for a failure that waiting does not mend (a name that does not resolve)."""
    if failure.limit == 1:
        return "not retried"
    return f"gave up after {attempts} attempts"


__all__ = [
    "redact",
    "parse_retry_after",
    "describe_exception",
    "ContentRange",
    "parse_content_range",
    "RETRY_STATUSES",
    "TRANSPORT_ERRORS",
    "retry_limit",
    "Failure",
    "failure_of",
    "Retrier",
    "gave_up_note",
]
