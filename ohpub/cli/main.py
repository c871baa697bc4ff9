"""The entry point of the ``ohpub`` console script and ``python -m ohpub``.

Light on purpose: ``ohpub -V`` prints the version without building the Typer app, and
every other command imports the app's modules only when it runs (the HTTP stack only
with the first request, ``model.lazy``).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

VERSION_ARGS = (["-V"], ["--version"])
"""Command lines answered without the app (the same line the app's ``--version`` prints)."""


def _on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(argv) if argv is not None else sys.argv[1:]
    if args in VERSION_ARGS:
        from ohpub.model.version import __version__

        print(f"ohpub {__version__}")
        return
    with contextlib.suppress(AttributeError, ValueError):
        # A file-size limit (ulimit -f) must be an EFBIG error we can report, not a kill.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, _on_sigterm)
    _app()(args=list(argv) if argv is not None else None, prog_name="ohpub")


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
