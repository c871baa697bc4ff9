"""The exceptions of ohpub: what went wrong, in words a user can act on.

Every failure a user can cause or meet is an ``OhpubError``: a ``message`` and an
optional ``hint``. They carry meaning, not exit codes: the CLI maps each class to its
documented exit code (``ohpub.cli.exits``), and a library caller catches the class it
cares about. Library code raises them and never prints.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (the entry point imports this module before its signal handlers)
if TYPE_CHECKING:
    from typing import Any


class OhpubError(Exception):
    """Base class: a failure with a user-facing message (and maybe a hint).

    ``str(exc)`` is the whole sentence a person should read, hint included
    (``project 999 not found; 'ohpub list projects' shows the public projects``), so a
    traceback in a notebook says what to do; ``message`` and ``hint`` are its two parts."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return with_hint(self.message, self.hint)


def with_hint(message: str, hint: str | None) -> str:
    """``message; hint``: the one way a hint joins its message (CLI lines, ``str(exc)``)."""
    return f"{message}; {hint}" if hint else message


class UsageError(OhpubError):
    """Bad input from the caller: option values, paths, arguments."""


class NotFoundError(OhpubError):
    """A project, member, datatype or file id that the server does not know (the CLI
    treats it as a usage error, exit 2: the user named something that is not there)."""


class NetworkError(OhpubError):
    """The server could not be reached or did not answer in time (after retries)."""


class ServerError(OhpubError):
    """The server answered, but not with what the API promises (HTML, bad JSON, 5xx)."""


class UnavailableError(OhpubError):
    """The file is listed but cannot be downloaded (deleted, incomplete, storage 403/404)."""


class KeyRefusedError(OhpubError):
    """The download key was refused ("not authorized"): it must be re-minted."""


class IntegrityError(OhpubError):
    """Bytes that do not match the length or MD5 the storage promised."""


class ChecksumError(IntegrityError):
    """A downloaded file failed its checksum after the retry; it was not saved."""


class IncompleteListingError(OhpubError):
    """The listing did not return every file in scope (see the README's listing
    guarantees), or some of its records were malformed; every good file that arrived was
    delivered. ``complete`` says whether the walk itself was whole; ``rejected`` holds
    the malformed records (``model.records.Rejected``: ``file_id``, ``where``,
    ``reason``)."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        complete: bool = False,
        rejected: list[Any] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.complete = complete
        self.rejected = list(rejected or [])


class LockedError(OhpubError):
    """Another ohpub run holds the destination's lock."""


class StateError(OhpubError):
    """The state database under DEST/.ohpub is corrupt, foreign or unreadable."""
