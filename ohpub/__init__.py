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

import logging as _logging

_logging.getLogger("ohpub").addHandler(_logging.NullHandler())

from ohpub.library import (  # noqa: E402 - after the logger's handler, before any record
    Client,
    Filters,
    MirrorEvent,
    MirrorResult,
    MirrorStatus,
    VerifyRecord,
    VerifyResult,
    datatypes,
    fetch,
    fetch_many,
    files,
    index,
    members,
    mirror,
    open,
    projects,
    read_bytes,
    status,
    stream,
    verify,
)
from ohpub.mirror.types import FileResult  # noqa: E402
from ohpub.model.errors import (  # noqa: E402
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
from ohpub.model.records import DataFile, FileStatus  # noqa: E402
from ohpub.model.version import __version__  # noqa: E402
from ohpub.ops.fetch import FetchResult  # noqa: E402
from ohpub.ops.status import Running, RunRecord, Tally  # noqa: E402

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


def __dir__() -> list[str]:
    """The public API only: the layers (``ohpub.model``, ``ohpub.remote``, ...) are
    subpackages the imports above load, not names for a caller."""
    return sorted(__all__)
