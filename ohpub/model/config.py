"""Every default of ohpub, written once.

The CLI builds a ``Config`` from its options (and their ``OHPUB_*`` environment
variables) and passes it down; the library's module-level functions build one from
the environment the same way (``Config.from_env``). Nothing below the CLI reads the
environment or keeps settings in a module global.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ohpub.model.cancel import CancelToken

DEFAULT_BASE_URL = "https://www.openhumans.org"
MiB = 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded in attempts and in time.

    Both bounds count from the last progress: a retry engine resets them whenever
    bytes arrive, so a long transfer that keeps moving is never given up on because
    it has run for longer than ``budget`` in all.
    """

    attempts: int = 6
    """Attempts in a row without progress before giving up."""
    base: float = 0.5
    """Seconds of the first backoff (before jitter); doubles with each attempt."""
    cap: float = 20.0
    """Largest single backoff, in seconds."""
    budget: float = 120.0
    """Seconds one request may spend failing and waiting since its last progress."""

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): the server's
        ``Retry-After`` when it sent one (the budget bounds it: a wait that would pass the
        budget is not started), else full jitter up to ``base * 2**attempt``, at most
        ``cap``."""
        if retry_after is not None:
            return max(retry_after, 0.0)
        return random.uniform(0, min(self.cap, self.base * (2 ** min(attempt, 60))))


@dataclass(frozen=True)
class Config:
    """How ohpub talks to Open Humans and its storage; one object, passed down."""

    base_url: str = DEFAULT_BASE_URL
    timeout: float = 30.0
    """Seconds to wait for the server to answer (each read)."""
    connect_timeout: float = 10.0
    api_concurrency: int = 4
    """Requests in flight to Open Humans itself (listing pages, keys): one Django site."""
    server_time_limit: float = 30.0
    """Seconds Open Humans lets one request run before its router answers HTTP 500 (30 s
    on the real site). Each listing request is sized from the server's measured speed to
    finish in a third of it (``remote.sizing``)."""
    listing_max_records: int = 5000
    """Most records in one listing request, whatever the server's speed (a page of the walk
    and a request that fills a gap alike): bounds the memory a response takes."""
    page_size: int | None = None
    """Most records in one page of the listing walk (None: ``listing_max_records``). The
    pages are sized below it from the server's speed; a small value makes page boundaries
    cut members (tests do that)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    jobs: int = 8
    """Storage connections at once (transfers, and ranges of one big file)."""
    key_max_age: float = 50 * 60.0
    """Keys live one hour from the listing; re-mint before that rather than meet a 403."""
    range_cutoff: int = 64 * MiB
    """Files at least this large may go over several connections at once (parallel ranges),
    when the measured rate of their first stream says that would finish them sooner."""
    range_size: int = 4 * MiB
    """The smallest range of a parallel transfer, and the unit its resume record counts in
    (ranges are longer while much of the file is left)."""
    cancel: CancelToken = field(default_factory=CancelToken, compare=False, repr=False)
    """Cancels every wait of what this Config drives (``model.cancel``: the CLI's signal
    handlers set it; ``with_()`` keeps it, ``Config()`` makes a fresh one)."""

    def with_(self, **changes: object) -> Config:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """The defaults as the CLI would have them with no options: ``OHPUB_BASE_URL``,
        ``OHPUB_TIMEOUT``, ``OHPUB_API_CONCURRENCY``, ``OHPUB_RETRIES`` and
        ``OHPUB_PAGE_SIZE`` and ``OHPUB_SERVER_TIME_LIMIT`` (used by the module-level
        functions of ``import ohpub``)."""
        env = os.environ if environ is None else environ
        base = cls()

        def num(name: str, kind: type[float] | type[int], default: float | None) -> Any:
            value = env.get(name)
            if not value:
                return default
            try:
                return kind(value)
            except ValueError:
                raise ValueError(f"invalid {name} {value!r}") from None

        return cls(
            base_url=env.get("OHPUB_BASE_URL") or base.base_url,
            timeout=num("OHPUB_TIMEOUT", float, base.timeout),
            api_concurrency=num("OHPUB_API_CONCURRENCY", int, base.api_concurrency),
            page_size=num("OHPUB_PAGE_SIZE", int, base.page_size),
            server_time_limit=num("OHPUB_SERVER_TIME_LIMIT", float, base.server_time_limit),
            retry=replace(base.retry, attempts=num("OHPUB_RETRIES", int, base.retry.attempts)),
        )


__all__ = ["Config", "RetryPolicy", "DEFAULT_BASE_URL"]
