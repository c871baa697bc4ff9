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
_TRAILING_ID_RE = re.compile(r"/(\d+)/?$")


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
    """Listed, not (or no longer) placed."""
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
    """An item of a listing is not what the API promises; it is skipped with a warning."""


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


def id_from_url(url: Any) -> int | None:
    """The last numeric path segment of an API URL (``.../project/176/`` -> 176)."""
    if not isinstance(url, str):
        return None
    m = _TRAILING_ID_RE.search(url.split("?", 1)[0])
    return int(m.group(1)) if m else None


def parse_datetime(value: Any) -> datetime:
    """Parse the API's ISO 8601 timestamps (``...Z`` or offsets) into aware datetimes."""
    if not isinstance(value, str):
        raise RecordError(f"bad timestamp {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RecordError(f"bad timestamp {value!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def _parse_user(value: Any) -> User:
    if value is None:
        return User(None, None, None)
    if not isinstance(value, dict):
        raise RecordError(f"bad user {value!r}")
    username = value.get("username")
    if username is None:
        return User(None, None, None)
    if not isinstance(username, str) or not _USERNAME_RE.match(username):
        raise RecordError(f"bad username {username!r}")
    uid = value.get("id")
    if isinstance(uid, str) and uid.isdigit():
        uid = int(uid)
    if uid is not None and (not isinstance(uid, int) or isinstance(uid, bool) or uid < 0):
        raise RecordError(f"bad user id {uid!r}")
    name = value.get("name")
    return User(uid, name if isinstance(name, str) else None, username)


def parse_datafile(obj: Any, *, listed_at: float = 0.0) -> DataFile:
    """Check and convert one data file object; raises RecordError when it is malformed."""
    if not isinstance(obj, dict):
        raise RecordError(f"data file is not an object: {obj!r:.80}")
    fid = obj.get("id")
    if not isinstance(fid, int) or isinstance(fid, bool) or fid <= 0:
        raise RecordError(f"bad file id {fid!r}")
    basename = obj.get("basename")
    if not isinstance(basename, str) or basename == "":
        raise RecordError(f"file {fid}: bad basename {basename!r}")
    download_url = obj.get("download_url")
    if not isinstance(download_url, str) or not download_url:
        raise RecordError(f"file {fid}: missing download_url")
    created = parse_datetime(obj.get("created"))
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    datatypes = obj.get("datatypes")
    dt_ids: list[int] = []
    if isinstance(datatypes, list):
        for u in datatypes:
            i = id_from_url(u)
            if i is not None:
                dt_ids.append(i)
    return DataFile(
        id=fid,
        basename=basename,
        created=created,
        download_url=download_url,
        metadata=metadata,
        project_id=id_from_url(obj.get("source_project")),
        datatype_ids=tuple(sorted(set(dt_ids))),
        user=_parse_user(obj.get("user")),
        raw=obj,
        listed_at=listed_at,
    )
