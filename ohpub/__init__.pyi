"""The public API as type checkers see it (``__init__.py`` imports it lazily)."""

from ohpub.library import Client as Client
from ohpub.library import Filters as Filters
from ohpub.library import MirrorEvent as MirrorEvent
from ohpub.library import MirrorResult as MirrorResult
from ohpub.library import MirrorStatus as MirrorStatus
from ohpub.library import VerifyRecord as VerifyRecord
from ohpub.library import VerifyResult as VerifyResult
from ohpub.library import datatypes as datatypes
from ohpub.library import fetch as fetch
from ohpub.library import fetch_many as fetch_many
from ohpub.library import files as files
from ohpub.library import index as index
from ohpub.library import members as members
from ohpub.library import mirror as mirror
from ohpub.library import open as open
from ohpub.library import projects as projects
from ohpub.library import read_bytes as read_bytes
from ohpub.library import status as status
from ohpub.library import stream as stream
from ohpub.library import verify as verify
from ohpub.mirror.types import FileResult as FileResult
from ohpub.model.errors import IncompleteListingError as IncompleteListingError
from ohpub.model.errors import IntegrityError as IntegrityError
from ohpub.model.errors import LockedError as LockedError
from ohpub.model.errors import NetworkError as NetworkError
from ohpub.model.errors import NotFoundError as NotFoundError
from ohpub.model.errors import OhpubError as OhpubError
from ohpub.model.errors import ServerError as ServerError
from ohpub.model.errors import StateError as StateError
from ohpub.model.errors import UnavailableError as UnavailableError
from ohpub.model.errors import UsageError as UsageError
from ohpub.model.records import DataFile as DataFile
from ohpub.model.records import FileStatus as FileStatus
from ohpub.model.version import __version__ as __version__
from ohpub.ops.fetch import FetchResult as FetchResult
from ohpub.ops.status import Running as Running
from ohpub.ops.status import RunRecord as RunRecord
from ohpub.ops.status import Tally as Tally

__all__: list[str]
