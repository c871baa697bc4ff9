"""SIGINT and SIGTERM: the command's cancel token, and the exit codes 130 and 143.

``install`` is the first thing the entry point does, before the command line's modules
are imported (``cli.main``), so a Ctrl-C in the first moments ends like any later one: one
``ohpub: interrupted`` line and the documented code, never a ``KeyboardInterrupt``
traceback. The handler cancels the token every layer's waits give up on (``Config.cancel``,
``model.cancel``) and raises ``KeyboardInterrupt`` in the main thread, so that a blocking
call there ends too, except inside a ``shielded`` section (a batch being placed), which
finishes and then meets the cancelled token at its next wait. An interrupt that lands in
a finalizer (say urllib3 closing a pool during garbage collection), where Python can only
print it, is dropped instead: the token is cancelled all the same.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType

from ohpub.cli.exits import EXIT_INTERRUPTED, EXIT_TERMINATED
from ohpub.model.cancel import CancelToken, interrupt_now

TYPE_CHECKING = False  # imported before the handlers are in place: typing would cost time
if TYPE_CHECKING:
    from typing import Any, NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_token: CancelToken | None = None
"""The token of the handlers installed now (None: none are)."""
_last: CancelToken | None = None
"""The token of the handlers installed last (what the exit code is decided on)."""


@contextlib.contextmanager
def installed() -> Iterator[CancelToken]:
    """Handlers for SIGINT and SIGTERM while the command runs (the previous ones after),
    and the token they cancel. A signal may arrive while they are installed or removed:
    the caller catches ``KeyboardInterrupt`` around this block."""
    global _token, _last
    token = _last = CancelToken()

    def handler(signum: int, frame: FrameType | None) -> None:
        token.cancel(signum)
        if interrupt_now():  # (inside a shielded section: as it ends)
            raise KeyboardInterrupt

    unraisable = sys.unraisablehook

    def quiet(info: Any) -> None:
        if not (isinstance(info.exc_value, KeyboardInterrupt) and token.cancelled):
            unraisable(info)

    previous: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | None] = {}
    with contextlib.suppress(ValueError):  # not the main thread: no handlers, a plain token
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    _token = token
    sys.unraisablehook = quiet
    try:
        yield token
    finally:
        _token = None
        sys.unraisablehook = unraisable
        for sig, old in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, old)


def begin() -> None:
    """A command starts: what the exit code is decided on is the token of the handlers
    installed now, never one left by a command before it (the app run in-process again)."""
    global _last
    _last = _token


def token() -> CancelToken:
    """The token of the command that runs: the one the handlers cancel, or (the app called
    in-process, without the entry point) a fresh one."""
    return _token if _token is not None else CancelToken()


def signalled() -> bool:
    """A signal arrived: whatever fails from now on fails because of it (a
    ``KeyboardInterrupt`` inside a class being made at import time comes out as a
    ``RuntimeError``, for one)."""
    return _last is not None and _last.signum is not None


def exit_code(code: int | None = None) -> int:
    """The code to exit with: 143 after SIGTERM, 130 after SIGINT (also when the command
    had otherwise succeeded: an interrupted run never exits 0), else ``code`` (130 when
    None)."""
    signum = _last.signum if _last is not None else None
    if signum is not None and code in (None, 0, EXIT_INTERRUPTED, EXIT_TERMINATED):
        return EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
    return EXIT_INTERRUPTED if code is None else code


def quit_interrupted() -> NoReturn:
    """End the process as an interrupted command does (before the app could, or after)."""
    with contextlib.suppress(ValueError):  # a second signal now changes nothing
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write("ohpub: interrupted\n")
        sys.stderr.flush()
    raise SystemExit(exit_code())


__all__ = ["installed", "begin", "token", "signalled", "exit_code", "quit_interrupted"]
