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

from ohpub.library import (
    Client,
    MirrorEvent,
    MirrorResult,
    MirrorStatus,
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
from ohpub.mirror.types import FileResult
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
from ohpub.model.records import DataFile, FileStatus
from ohpub.model.version import __version__
from ohpub.ops.fetch import FetchResult

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
