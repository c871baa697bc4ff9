"""What the user asked for: the listing filter, and the one place that turns the library's
and the CLI's filter arguments (ids, usernames, globs, dates) into it, checked."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from ohpub.model.errors import UsageError
from ohpub.model.records import DataFile, is_username


@dataclass
class FileFilter:
    """What the user asked for. Values of one filter OR together; filters AND together."""

    projects: tuple[int, ...] = ()
    users: tuple[str, ...] = ()
    datatypes: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, f: DataFile) -> bool:
        """Every requested filter, checked on the client: the server ignores query filters."""
        if self.projects and f.project_id not in self.projects:
            return False
        if self.users and f.username not in self.users:
            return False
        if self.datatypes and not set(self.datatypes) & set(f.datatype_ids):
            return False
        if self.tags and not set(self.tags) & set(f.tags):
            return False
        if self.names and not any(fnmatch.fnmatchcase(f.basename, g) for g in self.names):
            return False
        if self.since is not None and f.created < self.since:
            return False
        return not (self.until is not None and f.created >= self.until)

    def scope_paths(self) -> list[tuple[str, str, str]]:
        """The path endpoints to crawl, as (path, kind, value) with kind naming the filter.

        The narrowest filter goes into the path (a member has fewer files than a project);
        the rest are applied by ``matches``.
        """
        if self.users:
            return [(f"/api/public/member/{u}/datafiles/", "member", u) for u in self.users]
        if self.projects:
            return [
                (f"/api/public/project/{p}/datafiles/", "project", str(p)) for p in self.projects
            ]
        if self.datatypes:
            return [
                (f"/api/public/datatype/{d}/datafiles/", "datatype", str(d)) for d in self.datatypes
            ]
        return [("/api/public/datafiles/", "all", "")]

    def scope_key(self) -> str:
        """A stable name of the listing scope (what a complete listing covers)."""
        return json.dumps(
            {
                "projects": sorted(self.projects),
                "users": sorted(self.users),
                "datatypes": sorted(self.datatypes),
                "tags": sorted(self.tags),
                "names": sorted(self.names),
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
            },
            sort_keys=True,
        )


IdFilter = int | Iterable[int] | None


TextFilter = str | Iterable[str] | None


DateLike = datetime | date | str | None


def make_filter(
    project: IdFilter = None,
    user: TextFilter = None,
    datatype: IdFilter = None,
    tag: TextFilter = None,
    name: TextFilter = None,
    since: DateLike = None,
    until: DateLike = None,
) -> FileFilter:
    """The listing filter of the arguments above, checked (``UsageError`` when bad)."""
    users = _texts(user)
    for u in users:
        if not is_username(u):
            raise UsageError(f"invalid username {u!r}", hint="usernames are letters, digits, _")
    return FileFilter(
        projects=_ids(project, "project"),
        users=users,
        datatypes=_ids(datatype, "datatype"),
        tags=_texts(tag),
        names=_texts(name),
        since=to_datetime(since) if since is not None else None,
        until=to_datetime(until, end=True) if until is not None else None,
    )


def _ids(value: IdFilter, what: str) -> tuple[int, ...]:
    items = [value] if isinstance(value, int) else list(value or ())
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int) or i < 1:
            raise UsageError(f"invalid {what} id {i!r}", hint="ids are positive integers")
    return tuple(dict.fromkeys(items))


def _texts(value: TextFilter) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value or ())
    return tuple(dict.fromkeys(str(v) for v in items))


def to_datetime(value: datetime | date | str, *, end: bool = False) -> datetime:
    """An aware UTC datetime: a date (or ``YYYY-MM-DD``) is its day's start, or with
    ``end`` the next day's start (so ``until`` includes the day); an ISO timestamp as is."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                value = date.fromisoformat(text)
            else:
                value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise UsageError(
                f"invalid date {text!r}", hint="use YYYY-MM-DD or an ISO 8601 timestamp"
            ) from None
    if not isinstance(value, datetime):
        day = datetime.combine(value, time(), timezone.utc)
        return day + timedelta(days=1) if end else day
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
