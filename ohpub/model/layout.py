"""Where each public data file goes in the mirror: ``<user>/<project>/<name>``.

Naming rule
-----------

A file is stored at ``<username>/<project id>/<name>``. A member whose membership is
hidden (the API sends a user of nulls) goes under ``hidden-members``; a file whose project
id could not be parsed goes under ``no-project``. Neither can clash with a real directory:
usernames match ``^[A-Za-z_0-9]+$`` and project ids are digits.

``<name>`` is the uploader's basename made safe (see below). Basenames are not unique
within a member and project, so when several files want the same name, the newest (by
``created``, then by ``id``) keeps it and every older one gets its file id inserted
before the extension: ``spotify-listening-archive.57588874.json``,
``reads.12345.fastq.gz``, ``notes.12345`` (no extension). The extension is the last
suffix, or the last two when the last is a compression suffix (``.gz .bz2 .xz .zst .lz4
.Z``); a "suffix" is a dot followed by 1 to 16 characters without dots or whitespace, so
``Report v1.2 final`` has none. Names count as the same when they are equal after Unicode
NFC normalization and case folding, because macOS and Windows file systems treat them as
the same file. Plain names always win over generated ones: if an id-bearing name is
already taken (say a member uploaded a literal ``x.57.json``), the file gets
``x.57~2.json``, then ``~3`` and so on, until its name is free.

Making a basename safe: ``/``, ``\\``, NUL, control characters (C0, DEL, C1), the
characters Windows forbids (``< > : " | ? *``) and unencodable lone surrogates become
``_``; the name is NFC-normalized; a leading ``.`` becomes ``_`` (nothing is hidden, and
nothing can be ``.``, ``..`` or ohpub's own ``.ohpub``); trailing dots and spaces become
``_`` (Windows drops them); Windows device names (``CON``, ``PRN``, ``AUX``, ``NUL``,
``COM1``-``COM9``, ``LPT1``-``LPT9``, also with an extension as in ``nul.txt``) get a
``_`` prefix; an empty name becomes ``_``. A name longer than 255 bytes of UTF-8 keeps
its extension, has its stem cut on a character boundary and gets ``~`` plus a 10-digit
hex hash of the original basename, so two long names that share a prefix stay distinct.
Id-bearing names are cut the same way (without the hash: the id already makes them
unique) and never exceed 255 bytes either.

Stability: the layout is a pure function of the *set* of files. Each directory is
planned on its own, so a file in another member's or project's directory never moves a
path. Within a directory, adding a file moves other files only when the new file takes
a name one of them had (usually: a newer upload with the same basename takes the plain
name, and the previous holder moves to its id-bearing name).

Known limit: two usernames that differ only in case would share a directory on a
case-insensitive file system; usernames are used verbatim because renaming a member's
directory would break the stability promise above.

This module is pure (no I/O), so the rule is easy to test exhaustively and the
mirror, ``fetch`` and the dry run's plan all agree on it.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ohpub.model.records import DataFile, is_username

HIDDEN_DIR: str = "hidden-members"
"""Directory for hidden memberships; the ``-`` makes it a name no username can take."""

NO_PROJECT_DIR: str = "no-project"
"""Directory for files whose ``source_project`` URL had no parsable id."""

MAX_COMPONENT_BYTES = 255
"""The common file-name limit (ext4, APFS, NTFS counts UTF-16 units but 255 bytes fits)."""

_HASH_CHARS = 10
_MAX_SUFFIX_CHARS = 16
_COMPRESSION_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".zst", ".lz4", ".z"})
_WINDOWS_ILLEGAL = frozenset('/\\<>:"|?*')
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in (*"123456789", "¹", "²", "³")}
)


@dataclass(frozen=True)
class Entry:
    """What the layout needs to know about one data file, and nothing more.

    Keeping this separate from :class:`~ohpub.model.records.DataFile` lets tests (and
    ``ops.fetch``, which names files by basename only) plan paths without building full
    API records.
    """

    id: int
    basename: str
    created: datetime
    username: str | None
    project_id: int | None

    def __post_init__(self) -> None:
        # Refuse values that would break the guarantees instead of guessing: a naive
        # datetime cannot be ordered against aware ones, and a username outside the API's
        # alphabet could escape or alias a directory.
        if isinstance(self.id, bool) or not isinstance(self.id, int) or self.id <= 0:
            raise ValueError(f"bad file id {self.id!r}")
        if not isinstance(self.basename, str):
            raise ValueError(f"file {self.id}: basename is not a string")
        if self.created.tzinfo is None or self.created.utcoffset() is None:
            raise ValueError(f"file {self.id}: created must be timezone-aware")
        if self.username is not None and not is_username(self.username):
            raise ValueError(f"file {self.id}: bad username {self.username!r}")
        if self.project_id is not None and (
            isinstance(self.project_id, bool)
            or not isinstance(self.project_id, int)
            or self.project_id < 0
        ):
            raise ValueError(f"file {self.id}: bad project id {self.project_id!r}")

    @classmethod
    def of(cls, datafile: DataFile) -> Entry:
        """The layout-relevant part of a parsed API record."""
        return cls(
            id=datafile.id,
            basename=datafile.basename,
            created=datafile.created,
            username=datafile.username,
            project_id=datafile.project_id,
        )

    @property
    def directory(self) -> str:
        """``<user>/<project>``, the part of the path that does not depend on other files."""
        return directory_of(self.username, self.project_id)


def directory_of(username: str | None, project_id: int | None) -> str:
    """``<user>/<project>`` of a file (hidden members and unknown projects get fixed names)."""
    user = username if username is not None else HIDDEN_DIR
    project = str(project_id) if project_id is not None else NO_PROJECT_DIR
    return f"{user}/{project}"


def fold(name: str) -> str:
    """The collision key: names with equal keys are the same file on macOS or Windows.

    Canonical caseless matching (Unicode 3.13, D145): decompose, case-fold, then
    recompose, so ``é`` composed and decomposed, and ``Data.json``/``data.JSON``, collide.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", name).casefold())


def sanitize_component(name: str) -> str:
    """Map an uploader-chosen basename to one safe, portable path component.

    Deterministic and idempotent; the result is NFC, valid UTF-8, 1 to 255 bytes, never
    ``.``/``..``, never hidden, and legal on Linux, macOS and Windows.
    """
    safe = _sanitize_chars(name)
    if _nbytes(safe) <= MAX_COMPONENT_BYTES:
        return safe
    stem, ext = _split_ext(safe)
    tail = f"~{_short_hash(name)}{ext}"
    return _fit(stem, tail) + tail


def plan_paths(entries: Iterable[Entry]) -> dict[int, str]:
    """Map each file id to its relative POSIX path ``user/project/name``.

    The result depends only on the set of entries (not their order) and is injective
    under :func:`fold`. The same id may appear more than once only with identical data.
    """
    by_id: dict[int, Entry] = {}
    for entry in entries:
        known = by_id.setdefault(entry.id, entry)
        if known != entry:
            raise ValueError(f"file id {entry.id} given twice with different data")
    by_dir: dict[str, list[Entry]] = {}
    for entry in by_id.values():
        by_dir.setdefault(entry.directory, []).append(entry)
    paths: dict[int, str] = {}
    for directory, members in by_dir.items():
        for fid, name in _plan_directory(members).items():
            paths[fid] = f"{directory}/{name}"
    return dict(sorted(paths.items()))


def id_name(name: str, file_id: int, tier: int = 1) -> str:
    """The id-bearing variant of a name (``x.json`` -> ``x.<id>.json``, tier k: ``x.<id>~k.json``).

    The mirror uses it to move a file that is no longer listed out of the way of a
    listed one; it follows the same rule as the names :func:`plan_paths` generates.
    """
    stem, ext = _split_ext(_sanitize_chars(name))
    tail = f".{file_id}{'' if tier <= 1 else f'~{tier}'}{ext}"
    return _fit(stem, tail) + tail


def _plan_directory(entries: list[Entry]) -> dict[int, str]:
    """Name the files of one directory; see the module docstring for the rule.

    Tier 0 offers every file its sanitized plain name, tier 1 its id-bearing name, tier
    k >= 2 the id-bearing name with ``~k``. Within a tier files are served newest first
    and a name is taken by the first file that asks for it, so plain names beat generated
    ones and the newest file wins a tie. Ordering by (created, id) is total, hence the
    result does not depend on input order. It terminates: a file's candidates for
    tiers >= 1 have pairwise different fold keys (they end in a different ``.id`` /
    ``~k`` tail before the same extension), so each file is refused by an already-taken
    name at most n times and loses a same-tier race at most n times.
    """
    pending = sorted(entries, key=lambda e: (e.created, e.id), reverse=True)
    parts = {e.id: _Parts.of(e) for e in pending}
    taken: set[str] = set()
    names: dict[int, str] = {}
    tier = 0
    while pending:
        if tier > 2 * len(entries) + 2:  # unreachable, see docstring; never loop forever
            raise RuntimeError("layout did not converge")
        refused: list[Entry] = []
        for entry in pending:
            name = parts[entry.id].candidate(tier)
            key = fold(name)
            if key in taken:
                refused.append(entry)
            else:
                taken.add(key)
                names[entry.id] = name
        pending = refused
        tier += 1
    return names


@dataclass(frozen=True)
class _Parts:
    """A file's sanitized name pieces, computed once per planning run."""

    id: int
    plain: str
    stem: str
    ext: str

    @classmethod
    def of(cls, entry: Entry) -> _Parts:
        full = _sanitize_chars(entry.basename)  # not yet shortened: id names cut it themselves
        stem, ext = _split_ext(full)
        return cls(entry.id, sanitize_component(entry.basename), stem, ext)

    def candidate(self, tier: int) -> str:
        """The name this file asks for in ``tier`` (0: plain, 1: ``.id``, k: ``.id~k``)."""
        if tier == 0:
            return self.plain
        tail = f".{self.id}{'' if tier == 1 else f'~{tier}'}{self.ext}"
        return _fit(self.stem, tail) + tail


def _sanitize_chars(name: str) -> str:
    """Every rule of :func:`sanitize_component` except the length limit."""
    # Lone surrogates (from os.fsdecode-style input) cannot be encoded; drop them first so
    # normalization and encoding below never fail.
    text = "".join("_" if 0xD800 <= ord(c) <= 0xDFFF else c for c in name)
    text = unicodedata.normalize("NFC", text)
    # Replacing characters that have combining class 0 with "_" (which composes with
    # nothing) keeps the string in NFC.
    text = "".join("_" if _is_forbidden(c) else c for c in text)
    if text.startswith("."):
        text = "_" + text[1:]
    stripped = text.rstrip(". ")
    text = stripped + "_" * (len(text) - len(stripped))
    if not text:
        return "_"
    if _is_reserved(text):
        text = "_" + text
    return text


def _is_forbidden(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or char in _WINDOWS_ILLEGAL


def _is_reserved(name: str) -> bool:
    """Windows device names, which it reserves with any extension (``nul.txt``)."""
    return name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED


def _split_ext(name: str) -> tuple[str, str]:
    """Split off the extension the id is inserted before: ``reads.fastq.gz`` -> ``.fastq.gz``."""
    stem, ext = _split_suffix(name)
    if ext.lower() in _COMPRESSION_SUFFIXES:
        stem, inner = _split_suffix(stem)
        ext = inner + ext
    return stem, ext


def _split_suffix(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    suffix = name[dot + 1 :]
    if not 1 <= len(suffix) <= _MAX_SUFFIX_CHARS or any(c.isspace() for c in suffix):
        return name, ""
    return name[:dot], name[dot:]


def _fit(stem: str, tail: str) -> str:
    """Cut ``stem`` on a character boundary so that ``stem + tail`` fits in 255 bytes.

    A prefix of an NFC string is NFC, and ``tail`` starts with a character that composes
    with nothing, so the result stays normalized.
    """
    budget = MAX_COMPONENT_BYTES - _nbytes(tail)
    if _nbytes(stem) <= budget:
        return stem
    out: list[str] = []
    used = 0
    for char in stem:
        size = _nbytes(char)
        if used + size > budget:
            break
        out.append(char)
        used += size
    return "".join(out)


def _short_hash(name: str) -> str:
    """A hash of the original basename (surrogates and all) to keep cut names distinct."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:_HASH_CHARS]


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))
