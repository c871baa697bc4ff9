"""What the user asked for: the listing filter, and the one place that turns the library's
and the CLI's filter arguments (ids, usernames, globs, dates) into it, checked."""

from __future__ import annotations

import fnmatch
import json
import numbers
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, time, timedelta, timezone
from difflib import get_close_matches

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


IdLike = int | str
"""An Open Humans id as a caller may write it: ``176`` or ``"176"``."""


IdFilter = IdLike | Iterable[IdLike] | None


TextFilter = str | Iterable[str] | None


DateLike = datetime | date | str | None


@dataclass(frozen=True)
class Filters:
    """Which files: the seven filters of ``ohpub list`` and ``ohpub mirror``, declared once.

    The library's ``files()`` and ``mirror()`` take one (or the same names as keywords),
    and the CLI adds one option per field (``cli/options.py``), in this order. Each field
    takes one value or several (values of one filter OR together; filters AND together);
    ids may be ints or strings of digits; dates a ``datetime``, a ``date`` or
    ``YYYY-MM-DD`` (``until`` a date includes that day).
    """

    project: IdFilter = None
    """Only files of these project ids."""
    user: TextFilter = None
    """Only files of these members (usernames)."""
    datatype: IdFilter = None
    """Only files of these datatype ids."""
    tag: TextFilter = None
    """Only files with one of these metadata tags."""
    name: TextFilter = None
    """Only files whose basename matches one of these globs (``*.json``)."""
    since: DateLike = None
    """Only files created on or after this date or time (UTC)."""
    until: DateLike = None
    """Only files created on or before this date (the whole day) or time (UTC)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The filters' names, in their declared (and ``--help``) order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, filters: Filters | None = None, **where: object) -> Filters:
        """``filters`` with the keyword filters ``where`` on top; an unknown keyword is a
        ``UsageError`` that names the closest filter."""
        base = filters if filters is not None else cls()
        for key in where:
            if key not in cls.names():
                near = get_close_matches(key, cls.names(), n=1)
                known = ", ".join(cls.names())
                hint = f"did you mean {near[0]!r}?" if near else f"the filters are {known}"
                raise UsageError(f"unknown filter {key!r}", hint=hint)
        return replace(base, **where) if where else base  # type: ignore[arg-type]

    def given(self) -> tuple[str, ...]:
        """The names of the filters that are set (an empty list or string counts as unset)."""
        return tuple(n for n in self.names() if getattr(self, n) not in (None, (), [], ""))

    def to_filter(self) -> FileFilter:
        """The listing filter, checked (``FilterError`` naming the filter when a value is bad)."""
        users = _texts(self.user)
        for u in users:
            if not is_username(u):
                raise FilterError(
                    "user", f"{u!r} is not a username", "usernames are letters, digits and _"
                )
        return FileFilter(
            projects=_filter_ids(self.project, "project"),
            users=users,
            datatypes=_filter_ids(self.datatype, "datatype"),
            tags=_texts(self.tag),
            names=_texts(self.name),
            since=_date(self.since, "since"),
            until=_date(self.until, "until", end=True),
        )


class FilterError(UsageError):
    """A bad filter value: ``invalid value for since: 'x' is not a date``. ``field`` names
    the filter, so the CLI can say ``--since`` instead."""

    def __init__(self, field: str, detail: str, hint: str | None = None) -> None:
        super().__init__(f"invalid value for {field}: {detail}", hint=hint)
        self.field = field
        self.detail = detail


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
    return Filters(project, user, datatype, tag, name, since, until).to_filter()


def as_id(value: object) -> int | None:
    """An id from an int or a string of digits (``"57602983"``); None when it is not one."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        return None
    return int(value)  # numpy's int64 too (a pandas cell: df["id"].iloc[0])


def parse_id(value: object, what: str = "file") -> int:
    """One id (an int or a string of digits), or ``UsageError``: the library's functions
    take ``fetch(57602983)`` and ``fetch("57602983")`` alike."""
    n = as_id(value)
    if n is None:
        raise UsageError(f"invalid {what} id {value!r}", hint="ids are positive integers")
    return n


def _items(value: IdFilter) -> list[object]:
    """One id or several: a string (or an int, numpy's too) is one id, never its characters."""
    if isinstance(value, (numbers.Integral, str)) or not isinstance(value, Iterable):
        return [] if value is None else [value]
    return list(value)


def parse_ids(value: IdFilter, what: str) -> tuple[int, ...]:
    """One id or several, checked, deduplicated."""
    return tuple(dict.fromkeys(parse_id(i, what) for i in _items(value)))


def _texts(value: TextFilter) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value or ())
    return tuple(dict.fromkeys(str(v) for v in items))


def _filter_ids(value: IdFilter, what: str) -> tuple[int, ...]:
    for i in _items(value):
        if as_id(i) is None:
            raise FilterError(what, f"{i!r} is not an id", "ids are positive integers")
    return parse_ids(value, what)


def _date(value: DateLike, what: str, *, end: bool = False) -> datetime | None:
    if value is None:
        return None
    try:
        return to_datetime(value, end=end)
    except UsageError as exc:
        raise FilterError(what, exc.message, exc.hint) from None


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
                f"{text!r} is not a date", hint="use YYYY-MM-DD or an ISO 8601 time"
            ) from None
    if not isinstance(value, datetime):
        day = datetime.combine(value, time(), timezone.utc)
        return day + timedelta(days=1) if end else day
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
