"""ohpub: download and mirror the public data files of Open Humans.

The Python API (the CLI is a thin shell over it)::

    import ohpub
    import pandas as pd

    df = pd.DataFrame([f.to_dict() for f in ohpub.files(project=176)])
    result = ohpub.mirror("spotify", project=176)
    assert result.ok

Listings: ``files``, ``projects``, ``datatypes``, ``members``. Mirrors: ``mirror``,
``verify``, ``status``, ``index``. Single files: ``fetch``, ``fetch_many``, ``stream``,
``read_bytes``, ``open``.
A reusable connection: ``Client``. Failures are ``OhpubError`` subclasses. Nothing here
prints: the ``ohpub`` logger has a ``NullHandler``, so its records (a retry, a warning)
reach no stream unless the caller configures logging.
"""

from __future__ import annotations

import importlib

from ohpub.model.errors import (
    IncompleteListingError,
    IntegrityError,
    LockedError,
    NetworkError,
    NotFoundError,
    OhpubError,
    ServerError,
    StateError,
    UnavailableError,
    UsageError,
)
from ohpub.model.version import __version__

TYPE_CHECKING = False  # typing costs ``import ohpub`` (and the entry point) time
if TYPE_CHECKING:
    from typing import Any

_LAZY = {
    **dict.fromkeys(
        (
            "Client",
            "MirrorEvent",
            "MirrorResult",
            "MirrorStatus",
            "VerifyResult",
            "datatypes",
            "fetch",
            "fetch_many",
            "files",
            "index",
            "members",
            "mirror",
            "open",
            "projects",
            "read_bytes",
            "status",
            "stream",
            "verify",
        ),
        "ohpub.library",
    ),
    "DataFile": "ohpub.model.records",
    "FileStatus": "ohpub.model.records",
    "FileResult": "ohpub.mirror.types",
    "FetchResult": "ohpub.ops.fetch",
    "Filters": "ohpub.model.filters",
    "VerifyRecord": "ohpub.ops.verify",
    **dict.fromkeys(("RunRecord", "Running", "Tally"), "ohpub.ops.status"),
}
"""Names imported on first use (PEP 562): ``import ohpub`` stays light (no HTTP stack), so
the command line can install its signal handlers before the heavy imports (a Ctrl-C in the
first moments ends quietly). Type checkers read ``__init__.pyi``."""


# The function ``mirror`` shares its name with the subpackage ``ohpub.mirror``, whose first
# import binds the subpackage here; import it now (it is light) and drop the binding, so
# the name stays the function's.
importlib.import_module("ohpub.mirror")
globals().pop("mirror", None)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ohpub' has no attribute {name!r}")
    _quiet_logger()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def _quiet_logger() -> None:
    """The ``ohpub`` logger's ``NullHandler``, added before the API's first name is loaded
    (not at ``import ohpub``: the logging module would cost the entry point the time in
    which a Ctrl-C still meets Python's own handler)."""
    global _quiet_logger
    import logging

    logging.getLogger("ohpub").addHandler(logging.NullHandler())
    _quiet_logger = _noop


def _noop() -> None:
    return None


def __dir__() -> list[str]:
    """The public API only: the layers (``ohpub.model``, ...) are subpackages that imports
    bind here, not names for a caller (nor are this module's own helpers)."""
    return sorted(__all__)


__all__ = [
    "__version__",
    "files",
    "projects",
    "datatypes",
    "members",
    "mirror",
    "fetch",
    "fetch_many",
    "stream",
    "read_bytes",
    "open",
    "verify",
    "status",
    "index",
    "Client",
    "Filters",
    "DataFile",
    "FileResult",
    "FetchResult",
    "FileStatus",
    "MirrorEvent",
    "MirrorResult",
    "MirrorStatus",
    "RunRecord",
    "Running",
    "Tally",
    "VerifyRecord",
    "VerifyResult",
    "OhpubError",
    "NotFoundError",
    "NetworkError",
    "ServerError",
    "UnavailableError",
    "LockedError",
    "StateError",
    "IntegrityError",
    "IncompleteListingError",
    "UsageError",
]

