"""The entry point of the ``ohpub`` console script and ``python -m ohpub``.

Light on purpose: ``ohpub -V`` prints the version without building the Typer app; the
signal handlers (``cli.interrupts``) are installed before the command line's modules are
imported, so that a Ctrl-C in the first moments ends like any other (``ohpub:
interrupted``, exit 130; 143 for SIGTERM), not with a traceback; and the HTTP stack is
imported with the first request (``model.lazy``).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Sequence

VERSION_ARGS = (["-V"], ["--version"])
"""Command lines answered without the app (the same line the app's ``--version`` prints)."""

TYPE_CHECKING = False  # typing costs time before the handlers are in place
if TYPE_CHECKING:
    from typing import Any


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    if (list(argv) if argv is not None else sys.argv[1:]) in VERSION_ARGS:
        from ohpub.model.version import __version__

        print(f"ohpub {__version__}")
        return
    from ohpub.cli import interrupts  # before anything heavy: a Ctrl-C from here on is handled

    try:
        with interrupts.installed():
            with contextlib.suppress(AttributeError, ValueError):
                # A file-size limit (ulimit -f) must be an EFBIG error we can report, not a
                # kill.
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            try:
                app = _app()
            except Exception:
                if interrupts.signalled():  # an import cut short by the signal
                    raise KeyboardInterrupt from None
                raise
            app(args=list(argv) if argv is not None else None, prog_name="ohpub")
    except KeyboardInterrupt:  # before the app's own handler runs, or after it ended
        interrupts.quit_interrupted()
    finally:
        _handled_interrupt()


def _handled_interrupt() -> None:
    """CPython notes a ``KeyboardInterrupt`` that leaves an ``exec`` of a string (such as
    the one ``dataclasses`` runs for every class it makes, at import time) as unhandled,
    even when it is caught later, and then ends the process by SIGINT instead of with its
    exit code. Every interrupt was handled here: evaluating a string clears that note."""
    exec("None")  # noqa: S102 - a constant; see the docstring


def _app() -> Any:
    """The Typer app with every command registered (the costly imports)."""
    from ohpub.cli import commands, meta  # noqa: F401 - they register their commands on the app
    from ohpub.cli.app import app

    return app


def __getattr__(name: str) -> Any:
    """``from ohpub.cli.main import app`` (tests, the completion generator) imports it."""
    if name == "app":
        return _app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["main"]
