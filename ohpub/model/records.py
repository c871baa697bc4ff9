"""Typed records parsed from the Open Humans public API's JSON.

The API's shape has traps (see the reference notes): ids hide in URLs, a hidden
membership is a user of nulls, items can be ``{}``. Parsing happens once, here,
so the rest of ohpub deals in checked values. ``raw`` keeps the object exactly as
the server sent it, because json/jsonl output must show the real shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

_USERNAME_RE = re.compile(r"^[A-Za-z_0-9]+$")


def is_username(value: object) -> bool:
    """The one username rule: Open Humans usernames are ASCII letters, digits and ``_``
    (so a username can never escape or alias a directory of the mirror)."""
    return isinstance(value, str) and _USERNAME_RE.match(value) is not None


class FileStatus(str, Enum):
    """What happened to one file in a run: the ``status`` of a jsonl record of ``mirror``.

    The values are the strings users see (jsonl, summaries); ``PLANNED`` only appears in
    a dry run.
    """

    DOWNLOADED = "downloaded"
    RESUMED = "resumed"
    UNCHANGED = "unchanged"
    RENAMED = "renamed"
    UNAVAILABLE = "unavailable"
    SKIPPED = "skipped"
    FAILED = "failed"
    REMOVED_UPSTREAM = "removed-upstream"
    DELETED = "deleted"
    PLANNED = "planned"
    WAITING = "waiting"
    """Downloaded and verified, kept in ``.ohpub/partial``: the listing of its directory was
    incomplete, so its name is not certain yet; the next run places it without a download."""

    def __str__(self) -> str:
        return self.value


class StateStatus(str, Enum):
    """What the state database says of one tracked file (its ``status`` column)."""

    PRESENT = "present"
    """Placed at ``path`` and verified when placed."""
    REMOVED_UPSTREAM = "removed-upstream"
    """Placed, but a complete listing of its scope no longer has it."""
    UNAVAILABLE = "unavailable"
    FAILED = "failed"
    PENDING = "pending"
    """Listed, not (or no longer) placed. With a ``sha256``, its verified bytes wait in
    ``.ohpub/partial/<id>`` (``size`` and ``mtime_ns`` are that partial's)."""
    MODIFIED = "modified"
    """``verify`` found other bytes at ``path``: the next mirror downloads it again."""
    MISSING = "missing"
    """``verify`` found nothing at ``path``: the next mirror downloads it again."""

    def __str__(self) -> str:
        return self.value


class Action(str, Enum):
    """What the plan does with one file; the dry run prints these, the real run does them."""

    DOWNLOAD = "download"
    RESUME = "resume"
    PLACE = "place"
    """A verified download a run before kept in ``.ohpub/partial``: placed, not fetched."""
    REHASH = "rehash"
    RENAME = "rename"
    KEEP = "keep"
    MARK_REMOVED = "mark-removed"
    DELETE = "delete"
    SKIP = "skip"
    UNAVAILABLE = "unavailable"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Rejected:
    """A listing item that could not become a DataFile: reported as a failure, never
    dropped silently. ``file_id`` is None when the item has no usable id; ``where`` then
    names its place in the listing (endpoint and position)."""

    file_id: int | None
    where: str
    reason: str

    def message(self) -> str:
        who = f"file {self.file_id}" if self.file_id is not None else f"listing item {self.where}"
        return f"{who}: {self.reason}"


class RecordError(ValueError):
    """An item of a listing is not what the API promises. ``file_id`` is its id when that
    id is usable (the message then names only the reason), else None."""

    def __init__(self, reason: str, file_id: int | None = None) -> None:
        super().__init__(reason)
        self.file_id = file_id


@dataclass(frozen=True)
class User:
    """The member who shared a file; all fields are None for a hidden membership."""

    id: int | None
    name: str | None
    username: str | None

    @property
    def hidden(self) -> bool:
        return self.username is None


@dataclass(frozen=True)
class DataFile:
    """One public data file. ``id`` is its identity: files never change after upload."""

    id: int
    basename: str
    created: datetime
    download_url: str
    metadata: dict[str, Any]
    project_id: int | None
    datatype_ids: tuple[int, ...]
    user: User
    raw: dict[str, Any] = field(compare=False, repr=False)
    listed_at: float = field(default=0.0, compare=False)
    """Wall-clock time (time.time()) of the request that minted ``download_url``'s key."""

    @property
    def username(self) -> str | None:
        return self.user.username

    @property
    def tags(self) -> list[str]:
        tags = self.metadata.get("tags") if isinstance(self.metadata, dict) else None
        return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []

    @property
    def description(self) -> str | None:
        """``metadata.description``, when the uploader gave one."""
        d = self.metadata.get("description") if isinstance(self.metadata, dict) else None
        return d if isinstance(d, str) else None

    def to_dict(self) -> dict[str, Any]:
        """A flat dict of the typed fields (plus ``raw``): one row of a pandas DataFrame."""
        return {
            "id": self.id,
            "basename": self.basename,
            "created": self.created,
            "username": self.username,
            "user_id": self.user.id,
            "project_id": self.project_id,
            "datatype_ids": list(self.datatype_ids),
            "tags": self.tags,
            "description": self.description,
            "download_url": self.download_url,
            "raw": self.raw,
        }

    def derived(self) -> dict[str, Any]:
        """Fields ohpub adds beside the API's own in json/jsonl output."""
        return {
            "project_id": self.project_id,
            "datatype_ids": list(self.datatype_ids),
            "username": self.user.username,
        }


MAX_DB_INT = 2**63 - 1
"""Ids are SQLite INTEGERs: anything larger is not an id of this API."""
_DIGITS_RE = re.compile(r"[0-9]{1,19}")
_URL_RE = re.compile(
    r"https?://(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?(?:[/?#][!-~]*)?"
)
"""An absolute http(s) URL in printable ASCII (the API's download URLs are); IDNs and
spaces are refused, a port must be a port."""
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _small_int(text: str) -> int | None:
    """A non-negative decimal that fits an SQLite INTEGER, or None (also for ``"²"``)."""
    if not _DIGITS_RE.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_DB_INT else None


def id_from_url(url: Any) -> int | None:
    """The last numeric path segment of an API URL (``.../project/176/`` -> 176).

    None when there is no numeric last segment; a RecordError when there is one that no
    id can be (more digits than an SQLite INTEGER holds).
    """
    if not isinstance(url, str):
        return None
    path = url.split("?", 1)[0]
    if path.endswith("/"):
        path = path[:-1]
    head, slash, segment = path.rpartition("/")
    if not slash or not segment.isascii() or not segment.isdigit():
        return None
    value = _small_int(segment)
    if value is None:
        raise RecordError(f"id too large in {url[:80]!r}")
    return value


def parse_datetime(value: Any) -> datetime:
    """Parse the API's ISO 8601 timestamps (``...Z`` or offsets) into aware datetimes."""
    if not isinstance(value, str) or len(value) > 64:
        raise RecordError(f"bad timestamp {_short(value)}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        dt.astimezone(timezone.utc)  # an offset that pushes it out of range fails here
    except (ValueError, OverflowError) as exc:
        raise RecordError(f"bad timestamp {_short(value)}") from exc
    return dt


def _short(value: Any) -> str:
    """A value for a message: repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_user(value: Any) -> User:
    if value is None:
        return User(None, None, None)
    if not isinstance(value, dict):
        raise RecordError(f"bad user {_short(value)}")
    username = value.get("username")
    if username is None:
        return User(None, None, None)
    if not is_username(username):
        raise RecordError(f"bad username {_short(username)}")
    uid = value.get("id")
    if isinstance(uid, str):
        uid = _small_int(uid) if uid else None
        if uid is None:
            raise RecordError(f"bad user id {_short(value.get('id'))}")
    if uid is not None and (
        not isinstance(uid, int) or isinstance(uid, bool) or not 0 <= uid <= MAX_DB_INT
    ):
        raise RecordError(f"bad user id {_short(uid)}")
    name = value.get("name")
    return User(uid, name if isinstance(name, str) else None, username)


def _check_url(url: Any) -> str:
    """A download URL ohpub can request: http(s), a host, no whitespace or controls."""
    if not isinstance(url, str) or not url:
        raise RecordError("missing download_url" if not url else f"bad download_url {_short(url)}")
    m = _URL_RE.fullmatch(url) if url.isascii() and len(url) <= 8192 else None
    if m is None or (m.group(1) is not None and int(m.group(1)) > 65535):
        raise RecordError(f"bad download_url {_short(url)}")
    return url


def _check_text(obj: Any) -> None:
    """Every string (and key) in a record must be valid Unicode: a lone surrogate from a
    ``\\ud800`` escape could not be written to the state database or to stdout. ``repr``
    shows surrogates as escapes, so it is a cheap first look."""
    if "\\ud" not in repr(obj):
        return
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE_RE.search(value):
                raise RecordError(f"text that is not valid Unicode: {_short(value)}")
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _file_id(obj: Any) -> int:
    if not isinstance(obj, dict):
        raise RecordError(f"data file is not an object: {_short(obj)}")
    fid = obj.get("id")
    if not isinstance(fid, int) or isinstance(fid, bool) or not 0 < fid <= MAX_DB_INT:
        raise RecordError(f"bad file id {_short(fid)}")
    return fid


def parse_datafile(obj: Any, *, listed_at: float = 0.0) -> DataFile:
    """Check and convert one data file object.

    Any JSON value in any field gives either a DataFile whose every field is safe for
    the rest of ohpub (state database, layout, HTTP), or a RecordError; never another
    exception. The RecordError carries the file id when the id itself was usable.
    """
    fid = _file_id(obj)
    try:
        return _parse_fields(fid, obj, listed_at)
    except RecordError as exc:
        raise RecordError(str(exc), fid) from None


def _parse_fields(fid: int, obj: dict[str, Any], listed_at: float) -> DataFile:
    _check_text(obj)
    basename = obj.get("basename")
    if not isinstance(basename, str) or basename == "":
        raise RecordError(f"bad basename {_short(basename)}")
    download_url = _check_url(obj.get("download_url"))
    created = parse_datetime(obj.get("created"))
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    dt_ids: list[int] = []
    try:
        project_id = id_from_url(obj.get("source_project"))
        datatypes = obj.get("datatypes")
        for u in datatypes if isinstance(datatypes, list) else ():
            i = id_from_url(u)
            if i is not None:
                dt_ids.append(i)
    except RecordError as exc:
        raise RecordError(f"bad source_project or datatypes: {exc}") from None
    if project_id is None:
        # Every file belongs to a project: its folder, and the check of a --project scope.
        raise RecordError(f"bad source_project {_short(obj.get('source_project'))}")
    return DataFile(
        id=fid,
        basename=basename,
        created=created,
        download_url=download_url,
        metadata=metadata,
        project_id=project_id,
        datatype_ids=tuple(sorted(set(dt_ids))),
        user=_parse_user(obj.get("user")),
        raw=obj,
        listed_at=listed_at,
    )
