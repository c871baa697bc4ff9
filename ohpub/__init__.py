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
A reusable connection: ``Client``. Failures are ``OhpubError`` subclasses.
"""

import importlib
from typing import Any

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
    return sorted(set(globals()) | set(__all__))


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
    "DataFile",
    "FileResult",
    "FetchResult",
    "FileStatus",
    "MirrorEvent",
    "MirrorResult",
    "MirrorStatus",
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
