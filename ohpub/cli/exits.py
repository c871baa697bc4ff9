"""The exit codes of the ``ohpub`` command, and which failure gets which (CLI layer only).

The library raises exceptions and returns results that say what happened; this table is
the one place that turns them into the documented codes: 0 ok, 1 failure, 2 usage or
bad input (an unknown id included), 3 DEST locked by another run, 130 interrupted by
Ctrl-C (SIGINT), 143 stopped by SIGTERM (``cli.interrupts`` picks between the two).
"""

from __future__ import annotations

from ohpub.model.errors import LockedError, NotFoundError, OhpubError, UsageError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_INTERRUPTED = 130
"""128 + SIGINT: Ctrl-C."""
EXIT_TERMINATED = 143
"""128 + SIGTERM: a shutdown, ``timeout``, ``systemctl stop``."""

_BY_CLASS: tuple[tuple[type[OhpubError], int], ...] = (
    (LockedError, EXIT_LOCKED),
    (UsageError, EXIT_USAGE),
    (NotFoundError, EXIT_USAGE),
)


def exit_code_for(exc: OhpubError) -> int:
    """The documented exit code of a failure."""
    for cls, code in _BY_CLASS:
        if isinstance(exc, cls):
            return code
    return EXIT_FAILURE


__all__ = [
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_LOCKED",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "exit_code_for",
]
