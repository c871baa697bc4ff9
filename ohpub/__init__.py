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
import logging as _logging

_logging.getLogger("ohpub").addHandler(_logging.NullHandler())

from ohpub.model.errors import (  # noqa: E402 - after the logger's handler, before any record
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
from ohpub.model.version import __version__  # noqa: E402

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
    "FileResult": "ohpub.mirror.types",
    "FetchResult": "ohpub.ops.fetch",
    "DataFile": "ohpub.model.records",
    "FileStatus": "ohpub.model.records",
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
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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

