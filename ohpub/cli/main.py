"""The entry point of the ``ohpub`` console script and ``python -m ohpub``."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Sequence
from typing import Any, NoReturn

from ohpub.cli import commands, meta  # noqa: F401 - they register their commands on the app
from ohpub.cli.app import app


def _on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    with contextlib.suppress(AttributeError, ValueError):
        # A file-size limit (ulimit -f) must be an EFBIG error we can report, not a kill.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, _on_sigterm)
    app(args=list(argv) if argv is not None else None, prog_name="ohpub")


__all__ = ["app", "main"]
