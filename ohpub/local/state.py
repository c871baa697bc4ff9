"""Bookkeeping for a mirror: the state database (the lock is ``local.lock``).

Everything ohpub knows about a mirror lives under ``DEST/.ohpub``: ``state.sqlite3``
(which file id sits at which path, with what checksums, and the history of runs),
``lock`` (held by the one run allowed to write) and ``partial/`` (downloads in
flight). The mirrored files themselves carry no metadata, so the database is the
only record of what ohpub placed; that is why it is guarded so jealously here: a
corrupt, foreign or newer database is refused with a StateError, never replaced.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, NoReturn, TypeVar

from ohpub.local import tree
from ohpub.model import plan
from ohpub.model.cancel import shielded
from ohpub.model.errors import StateError, UsageError
from ohpub.model.records import DataFile, StateStatus

OHPUB_DIR = ".ohpub"
STATE_DB_NAME = "state.sqlite3"
LOCK_NAME = "lock"
PARTIAL_NAME = "partial"

APPLICATION_ID = 0x6F687062
"""``PRAGMA application_id`` of an ohpub state database ("ohpb" in ASCII).

It lets us tell our database from any other SQLite file that happens to sit at
the same path, so we never adopt (or scribble on) somebody else's data.
"""

SCHEMA_VERSION = 1
"""``PRAGMA user_version``. A newer value means a newer ohpub wrote the file; we
refuse it rather than misread columns we do not know about."""

STATUSES = frozenset(s.value for s in StateStatus)

_MOVE_AWAY_HINT = "move it away or use another DEST"
_PERMISSION_HINT = (
    "status and verify need read access to DEST/.ohpub and its files, mirror needs write "
    "access too; check their owner and permissions"
)
NO_WRITE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_SQLITE_FILES = tuple(STATE_DB_NAME + sfx for sfx in ("", "-wal", "-shm", "-journal"))
"""The database and the side files SQLite opens by name (following symlinks itself)."""

# The database's schema: the ``files`` table is made from FileState's fields (below), the
# rest is written here.
_SCHEMA_REST = """\
CREATE INDEX files_path ON files (path) WHERE path IS NOT NULL;
CREATE TABLE runs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    command  TEXT    NOT NULL,
    scope    TEXT    NOT NULL,
    started  REAL    NOT NULL,
    ended    REAL,
    outcome  TEXT,
    counts   TEXT    NOT NULL DEFAULT '{}',
    complete INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE scope_counts (
    scope_key TEXT    PRIMARY KEY,
    count     INTEGER NOT NULL,
    updated   REAL    NOT NULL
);
"""

def ohpub_dir(dest: Path) -> Path:
    """``DEST/.ohpub``: ohpub's own corner of the mirror."""
    return dest / OHPUB_DIR


def partial_dir(dest: Path) -> Path:
    """``DEST/.ohpub/partial``: downloads in flight, on the same filesystem as their
    final place so that finishing one is an atomic rename."""
    return ohpub_dir(dest) / PARTIAL_NAME


def state_db_path(dest: Path) -> Path:
    """``DEST/.ohpub/state.sqlite3``."""
    return ohpub_dir(dest) / STATE_DB_NAME


def check_ohpub_dir(dest: Path) -> None:
    """Refuse (UsageError, exit 2) a ``DEST/.ohpub`` or ``.ohpub/partial`` that is a symlink.

    Lock, state and partial downloads would all land wherever the link points (and a
    root cron mirror would truncate and write files there), against the promise that
    nothing is written outside DEST. Missing is fine: mirror creates them.
    """
    for rel in (OHPUB_DIR, f"{OHPUB_DIR}/{PARTIAL_NAME}"):
        st = tree.lstat_within(dest, rel)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise UsageError(
                f"{dest / rel} is {what}; refusing to use it: ohpub keeps its lock, state and "
                "partial downloads in a real directory inside DEST and never follows a "
                "symlink there",
                hint=f"remove the link {dest / rel}, or move what it points to into its place",
            )


def ensure_dirs(dest: Path) -> None:
    """Create ``.ohpub`` and ``.ohpub/partial`` (and DEST itself) if missing, refusing
    symlinks on the way (see check_ohpub_dir).

    An unwritable DEST is the user's to fix, so it becomes a UsageError.
    """
    check_ohpub_dir(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        os.close(tree.open_dir_nofollow(dest, [OHPUB_DIR, PARTIAL_NAME], create=True))
    except (OSError, tree.DiskError) as exc:
        code = exc.errno if isinstance(exc.errno, int) else 0
        raise UsageError(
            f"cannot create {partial_dir(dest)}: {os.strerror(code) if code else exc}",
            hint="DEST must be a writable directory",
        ) from exc


def stat_fingerprint(path: Path) -> tuple[int, int] | None:
    """``(size, st_mtime_ns)`` of a regular file, or None if missing or not a regular file.

    lstat, not stat: a symlink planted where a mirrored file should be is not our
    file, and following it could make verify vouch for bytes outside DEST.
    """
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


class _Stored(str):
    """A JSON column's text as SQLite returned it (not yet parsed)."""


def _col(sql: str) -> Any:
    """A column of the ``files`` table: its SQL type, declared with its FileState field."""
    return field(metadata={"sql": sql})


class _Json:
    """A JSON column of ``FileState``: kept as the stored text until it is read (a no-op
    run compares most records as text and parses only the few that changed), parsed once,
    and stored again as the same text when it was never touched."""

    def __init__(self, sql: str, dump: Callable[[Any], Any] = lambda v: v) -> None:
        self.sql = sql
        self._dump = dump

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self._value, self._text = f"_{name}_value", f"_{name}_text"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            raise AttributeError(self.name)  # (a dataclass field without default)
        d = obj.__dict__
        if self._value not in d:
            try:
                d[self._value] = json.loads(d[self._text])
            except ValueError as exc:
                raise StateError(
                    f"state database: unreadable {self.name} of file {obj.id!r}: {exc}",
                    hint="if the file is damaged, " + _MOVE_AWAY_HINT,
                ) from exc
        return d[self._value]

    def __set__(self, obj: Any, value: Any) -> None:
        d = obj.__dict__
        if isinstance(value, _Stored):
            d[self._text] = value
            d.pop(self._value, None)
        else:
            d[self._value] = value
            d.pop(self._text, None)

    def text(self, obj: Any) -> str:
        """The column's text: as stored, or the value as it would be stored."""
        d = obj.__dict__
        stored = d.get(self._text)
        return stored if stored is not None else _dumps(self._dump(d[self._value]))


@dataclass
class FileState:
    """What ohpub knows about one data file, keyed by its (immutable) API id: one row of
    the ``files`` table. The fields ARE the table: their order, names and SQL types
    declare its columns (the CREATE TABLE, the SELECT and the INSERT are made from them).
    Rows read from the database keep their JSON columns as text until a field is read."""

    id: int = _col("INTEGER PRIMARY KEY")
    path: str | None = _col("TEXT")
    """Relative POSIX path under DEST; None while the file is not placed."""
    size: int | None = _col("INTEGER")
    mtime_ns: int | None = _col("INTEGER")
    """With ``size``, the stat fingerprint of the file at ``path`` when last verified:
    if both still match, the bytes need not be hashed again."""
    sha256: str | None = _col("TEXT")
    md5: str | None = _col("TEXT")
    etag: str | None = _col("TEXT")
    """Storage ETag without quotes."""
    basename: str = _col("TEXT    NOT NULL")
    created: str = _col("TEXT    NOT NULL")
    """ISO 8601 exactly as the API sent it."""
    user_id: int | None = _col("INTEGER")
    username: str | None = _col("TEXT")
    project_id: int | None = _col("INTEGER")
    datatype_ids: list[int] = _Json("TEXT    NOT NULL", list)  # type: ignore[assignment]
    metadata: dict[str, Any] = _Json("TEXT    NOT NULL")  # type: ignore[assignment]
    raw: dict[str, Any] = _Json("TEXT    NOT NULL", lambda r: _without_download_url(r))  # type: ignore[assignment]
    """The API object minus ``download_url`` (its key expires, so storing it is useless
    and would leak a credential-like token into the mirror), ``datatypes`` sorted."""
    first_seen: float = _col("REAL    NOT NULL")
    last_seen: float = _col("REAL    NOT NULL")
    downloaded_at: float | None = _col("REAL")
    status: str = _col("TEXT    NOT NULL")
    """One of STATUSES: present, removed-upstream, unavailable, failed, pending."""

    @classmethod
    def from_datafile(cls, df: DataFile, now: float) -> FileState:
        """A new, not yet placed ("pending") record for a file seen in a listing."""
        created = df.raw.get("created")
        return cls(
            id=df.id,
            path=None,
            size=None,
            mtime_ns=None,
            sha256=None,
            md5=None,
            etag=None,
            basename=df.basename,
            created=created if isinstance(created, str) else df.created.isoformat(),
            user_id=df.user.id,
            username=df.user.username,
            project_id=df.project_id,
            datatype_ids=list(df.datatype_ids),
            metadata=dict(df.metadata),
            raw=_without_download_url(df.raw),
            first_seen=now,
            last_seen=now,
            downloaded_at=None,
            status=plan.NEW_STATUS.value,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> FileState:
        """A record as SQLite returned it (``_SELECT_FILES``), its JSON columns unparsed."""
        values: list[Any] = [
            _Stored(v) if c in _JSON_COLUMNS else v for c, v in zip(_COLUMNS, row, strict=True)
        ]
        return cls(*values)

    def stored(self, column: str) -> Any:
        """What the database holds (or would hold) in ``column``: JSON columns as text."""
        json_col = _JSON_COLUMNS.get(column)
        return json_col.text(self) if json_col is not None else getattr(self, column)

    @staticmethod
    def text_of(raw: Mapping[str, Any]) -> str:
        """The ``raw`` column's text for an API record (what ``put`` would store)."""
        return _dumps(_without_download_url(raw))

    @staticmethod
    def ids_text(ids: Iterable[int]) -> str:
        """The ``datatype_ids`` column's text."""
        return _dumps(list(ids))


_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(FileState))
_JSON_COLUMNS: dict[str, _Json] = {
    name: d for name in _COLUMNS if isinstance(d := FileState.__dict__.get(name), _Json)
}


def _sql_type(name: str) -> str:
    json_col = _JSON_COLUMNS.get(name)
    if json_col is not None:
        return json_col.sql
    return str(next(f for f in fields(FileState) if f.name == name).metadata["sql"])


_SCHEMA = (
    "\nCREATE TABLE files (\n"
    + ",\n".join(f"    {name:<13} {_sql_type(name)}" for name in _COLUMNS)
    + "\n);\n"
    + _SCHEMA_REST
)
_SELECT_FILES = f"SELECT {', '.join(_COLUMNS)} FROM files"


class Known(NamedTuple):
    """A tracked file as the planner sees it: fingerprint, status, and the stored text of
    what the listing says of it (``raw`` and ``datatype_ids`` as JSON text)."""

    id: int
    path: str | None
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    status: str
    raw: str
    username: str | None
    user_id: int | None
    datatype_ids: str


_SELECT_KNOWN = f"SELECT {', '.join(Known._fields)} FROM files"
_PUT_FILE = (
    f"INSERT OR REPLACE INTO files ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


@dataclass
class RunInfo:
    """One ohpub run as recorded by begin_run/end_run.

    ``ended`` is None for a run that never finished (killed or crashed): that is
    how the next run learns the previous one died.
    """

    id: int
    command: str
    scope: dict[str, Any]
    started: float
    ended: float | None
    outcome: str | None
    counts: dict[str, int]
    complete: bool

    @property
    def error(self) -> str | None:
        """What went wrong first in a failed run (None for older records)."""
        value = self.scope.get("error") if isinstance(self.scope, dict) else None
        return value if isinstance(value, str) else None


def _without_download_url(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The record as stored: without its expiring ``download_url``, and with ``datatypes``
    sorted (the server sends them in a different order on every request), so that an
    unchanged record's text is the stored text and a re-run compares it without parsing."""
    out = {k: v for k, v in raw.items() if k != "download_url"}
    dts = out.get("datatypes")
    if isinstance(dts, list) and all(isinstance(d, str) for d in dts):
        out["datatypes"] = sorted(dts)
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_C = TypeVar("_C", bound="_Connection")


class _Connection:
    """One checked SQLite connection to a state database, and how it is used: every use
    serialised by one lock, SQLite failures turned into StateError, one IMMEDIATE
    transaction per write (``StateDB`` is the public face)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool = False) -> None:
        """Use StateDB.open; this only wraps an already checked connection."""
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self._lock = threading.Lock()
        self.changes = 0
        """File records written or deleted through this handle (``last_seen`` aside): a run
        that changed none need not rewrite the index."""

    def close(self) -> None:
        """Close the connection; SQLite checkpoints the WAL into the main file."""
        with self._lock:
            self._conn.close()

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn SQLite failures (disk I/O, corruption found mid-run, full disk) into
        StateError naming the file, so the CLI reports them instead of a traceback.
        Misuse (a closed connection, bad SQL) stays a programming error."""
        try:
            yield
        except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.Error as exc:
            raise StateError(
                f"state database {self.path}: {action} failed: {exc}", hint=_hint_for(exc)
            ) from exc

    @contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock, self._guard(action):
            yield self._conn

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction, committed on success and rolled back on any
        exception (KeyboardInterrupt included) so no half-written batch survives. A
        ``shielded`` section: Ctrl-C is raised after it, never between BEGIN and the
        ROLLBACK or COMMIT (which would leave the connection inside a transaction)."""
        with self._lock, self._guard(action), shielded():
            conn = self._conn
            if conn.in_transaction:  # left by a KeyboardInterrupt of Python's own handler
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _row_to_file(self, row: Sequence[Any]) -> FileState:
        return FileState.from_row(row)

    @staticmethod
    def _file_params(fs: FileState) -> tuple[Any, ...]:
        if fs.status not in STATUSES:
            raise ValueError(f"file {fs.id}: unknown status {fs.status!r}")
        return tuple(fs.stored(c) for c in _COLUMNS)


class _RunLog(_Connection):
    """The history of runs (``runs`` table): how ``status`` knows how the last ones ended."""

    # -- runs --------------------------------------------------------------

    def begin_run(self, command: str, scope: dict[str, Any]) -> int:
        """Record the start of a run and return its id.

        Recorded at the start, not the end, so a run that dies leaves a trace
        (``ended`` stays None) that the next status can report.
        """
        with self._write("recording a run") as conn:
            cur = conn.execute(
                "INSERT INTO runs (command, scope, started) VALUES (?, ?, ?)",
                (command, _dumps(scope), time.time()),
            )
            run_id = cur.lastrowid
        assert run_id is not None
        return run_id

    def end_run(
        self,
        run_id: int,
        outcome: str,
        counts: dict[str, int],
        complete: bool,
        error: str | None = None,
    ) -> None:
        """Record how a run ended; ``complete`` means the run saw its whole scope (every
        listing page); ``error`` is what went wrong first (kept with the run's scope, as
        ``"error"``: no schema change). (The ``scope_counts`` table of schema 1 is no longer
        written.)"""
        now = time.time()
        with self._write("recording the end of a run") as conn:
            row = conn.execute("SELECT scope FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise ValueError(f"no run with id {run_id}")
            details = json.loads(row[0]) if error is not None else None
            if isinstance(details, dict):
                details["error"] = error
            conn.execute(
                "UPDATE runs SET ended = ?, outcome = ?, counts = ?, complete = ?"
                + (", scope = ?" if isinstance(details, dict) else "")
                + " WHERE id = ?",
                (now, outcome, _dumps(counts), int(complete))
                + ((_dumps(details),) if isinstance(details, dict) else ())
                + (run_id,),
            )

    def last_run(self, *, complete_only: bool = False, before: int | None = None) -> RunInfo | None:
        """The most recently begun run (finished or not), or the latest complete one;
        with ``before``, the latest one older than run ``before`` (status skips a run
        that is still going this way)."""
        conds = (("complete = 1", complete_only), ("id < ?", before is not None))
        where = [w for w, on in conds if on]
        sql = (
            "SELECT id, command, scope, started, ended, outcome, counts, complete FROM runs"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY id DESC LIMIT 1"
        )
        with self._read("reading runs") as conn:
            row = conn.execute(sql, () if before is None else (before,)).fetchone()
        return None if row is None else self._run_of(row)

    def runs(self, command: str) -> list[RunInfo]:
        """Every recorded run of ``command``, the most recent first (a mirror has one a
        night: a few thousand rows at most)."""
        with self._read("reading runs") as conn:
            rows = conn.execute(
                "SELECT id, command, scope, started, ended, outcome, counts, complete FROM runs"
                " WHERE command = ? ORDER BY id DESC",
                (command,),
            ).fetchall()
        return [self._run_of(row) for row in rows]

    def _run_of(self, row: tuple[Any, ...]) -> RunInfo:
        try:
            return RunInfo(
                id=row[0],
                command=row[1],
                scope=json.loads(row[2]),
                started=row[3],
                ended=row[4],
                outcome=row[5],
                counts=json.loads(row[6]),
                complete=bool(row[7]),
            )
        except ValueError as exc:
            raise StateError(
                f"state database {self.path}: unreadable record for run {row[0]}: {exc}",
                hint="if the file is damaged, " + _MOVE_AWAY_HINT,
            ) from exc


class StateDB(_RunLog):
    """The state database of one mirror: a single SQLite connection, the single writer.

    WAL mode so that read-only commands (status) can read while a sync writes.
    ``synchronous=FULL``: every put is fsynced before it returns. A put follows a
    finished download, so one fsync is cheap next to the network round trip, and it
    keeps the promise "the database never forgets a file it placed" across power
    loss, not just across a killed process (NORMAL could roll the last commits back,
    leaving files at their paths that the database does not know as ours).

    In a mirror only the main thread uses it (workers never touch the state: see
    ARCHITECTURE.md); it may still be used from any thread (``check_same_thread=False``),
    every use serialised by one lock. Transactions are explicit (autocommit connection +
    BEGIN IMMEDIATE) so nothing stays open between calls.
    """

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(cls, dest: Path, *, create: bool = True, readonly: bool = False) -> StateDB:
        """Open (and with ``create``, initialise) ``DEST/.ohpub/state.sqlite3``.

        Refuses with StateError anything that is not our database: garbage bytes,
        another application's SQLite file, a schema newer than this ohpub. It never
        starts over on such a file, because the database is the only record of
        which files in DEST ohpub put there. SQLite follows symlinks by itself, so
        the database and its side files must be regular files (or absent) below a
        real ``.ohpub``; a symlink there is refused (UsageError).

        ``readonly`` (status, verify without write access) opens with ``mode=ro`` and
        writes nothing: not the schema, not the WAL switch; see _connect_readonly.
        """
        path = state_db_path(dest)
        check_ohpub_dir(dest)
        for name in _SQLITE_FILES:
            tree.require_regular_or_absent(dest, f"{OHPUB_DIR}/{name}")
        if create and not readonly:
            ensure_dirs(dest)
        elif not path.exists():
            raise StateError(
                f"{dest} is not an ohpub mirror (no {OHPUB_DIR}/{STATE_DB_NAME})",
                hint="check the DEST path, or run a sync into it first",
            )
        if path.exists() and not os.access(path, os.R_OK):
            raise StateError(
                f"cannot read the state database {path}: permission denied",
                hint=_PERMISSION_HINT,
            )
        if readonly:
            return cls(_connect_readonly(path), path, readonly=True)
        uri = path.absolute().as_uri() + ("?mode=rwc" if create else "?mode=rw")
        try:
            conn = sqlite3.connect(
                uri, uri=True, check_same_thread=False, isolation_level=None, timeout=10.0
            )
        except sqlite3.Error as exc:
            raise StateError(f"cannot open {path}: {exc}", hint=_hint_for(exc)) from exc
        try:
            _check_and_init(conn, path, create=create)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    # -- files -------------------------------------------------------------

    def get(self, file_id: int) -> FileState | None:
        """The record of one file id, or None if ohpub has never seen it."""
        with self._read("reading a file record") as conn:
            row = conn.execute(f"{_SELECT_FILES} WHERE id = ?", (file_id,)).fetchone()
        return None if row is None else self._row_to_file(row)

    def get_many(self, ids: Iterable[int]) -> dict[int, FileState]:
        """The records of many file ids (those ohpub knows), a chunk of ids per query. Their
        JSON columns are parsed when read, where they are read."""
        return {int(r[0]): self._row_to_file(r) for r in self._chunked(_SELECT_FILES, ids)}

    def known_many(self, ids: Iterable[int]) -> dict[int, Known]:
        """What the planning of a listing reads of many file ids: a narrow row each, no
        object built, nothing parsed (a nightly re-run finds almost every record
        unchanged by comparing texts; ``get_many`` fetches the few that differ)."""
        return {int(r[0]): Known(*r) for r in self._chunked(_SELECT_KNOWN, ids)}

    def _chunked(self, select: str, ids: Iterable[int]) -> Iterator[Any]:
        keys = [int(i) for i in ids]
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" for _ in chunk)
            with self._read("reading file records") as conn:
                rows = conn.execute(f"{select} WHERE id IN ({marks})", chunk).fetchall()
            yield from rows

    def iter_paths(self, batch: int = 5000) -> Iterator[tuple[int, str | None, str]]:
        """``(id, path, status)`` of every record by id, without parsing the records: what
        a pass over the whole mirror needs to find the few files it must look at."""
        last = -1
        while True:
            with self._read("reading file paths") as conn:
                rows = conn.execute(
                    "SELECT id, path, status FROM files WHERE id > ? ORDER BY id LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            for fid, path, status in rows:
                yield int(fid), path, str(status)
            last = rows[-1][0]

    def tally(
        self, placed: Iterable[str]
    ) -> tuple[dict[str, int], dict[str, dict[str, int]], dict[str, dict[str, int]]]:
        """Counts for ``status``, computed by SQLite: records by status, and the files and
        bytes placed (``placed`` statuses, with a path) by project and by member."""
        placed = tuple(placed)
        marks = ",".join("?" for _ in placed)
        where = f"path IS NOT NULL AND status IN ({marks})"
        with self._read("counting file records") as conn:
            by_status = dict(conn.execute("SELECT status, count(*) FROM files GROUP BY status"))
            groups = []
            for column, none in (("project_id", "None"), ("username", "(hidden)")):
                rows = conn.execute(
                    f"SELECT {column}, count(*), coalesce(sum(size), 0) FROM files"
                    f" WHERE {where} GROUP BY {column}",
                    list(placed),
                ).fetchall()
                groups.append(
                    {
                        str(k) if k is not None else none: {"files": n, "bytes": b}
                        for k, n, b in rows
                    }
                )
        return {str(k): int(v) for k, v in by_status.items()}, groups[0], groups[1]

    def all(self) -> list[FileState]:
        """Every record, ordered by file id (stable output for status and verify)."""
        with self._read("reading file records") as conn:
            rows = conn.execute(f"{_SELECT_FILES} ORDER BY id").fetchall()
        return [self._row_to_file(r) for r in rows]

    def iter_all(self, batch: int = 1000) -> Iterator[FileState]:
        """Every record by id, a batch at a time: a 100,000-file index is written without
        holding 100,000 records in memory (or the lock between batches)."""
        last = -1
        while True:
            with self._read("reading file records") as conn:
                rows = conn.execute(
                    f"{_SELECT_FILES} WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield self._row_to_file(row)
            last = rows[-1][0]

    def put(self, fs: FileState) -> None:
        """Insert or replace one record, committed (and fsynced) before returning, so
        a crash loses at most the files still in flight."""
        params = self._file_params(fs)
        with self._write("saving a file record") as conn:
            conn.execute(_PUT_FILE, params)
        self.changes += 1

    def put_many(self, items: Iterable[FileState]) -> None:
        """Insert or replace many records in one transaction: all or none."""
        params = [self._file_params(fs) for fs in items]
        if not params:
            return
        with self._write("saving file records") as conn:
            conn.executemany(_PUT_FILE, params)
        self.changes += len(params)

    def mark_seen(self, ids: Iterable[int], when: float) -> None:
        """Set ``last_seen`` of many unchanged records in one statement-batch transaction:
        an up-to-date mirror of 10,000 files must not rewrite 10,000 rows."""
        params = [(when, int(i)) for i in ids]
        if not params:
            return
        with self._write("marking files seen") as conn:
            conn.executemany("UPDATE files SET last_seen = ? WHERE id = ?", params)

    def delete(self, file_id: int) -> None:
        """Forget a file id entirely (a missing id is not an error)."""
        self.changes += 1
        with self._write("deleting a file record") as conn:
            conn.execute("DELETE FROM files WHERE id = ?", (file_id,))


def _hint_for(exc: BaseException) -> str:
    """What to do about a SQLite failure. Moving the database away loses the record of
    which files ohpub placed, so it is suggested only for a damaged file: never for a
    full disk, and never for a permission or read-only problem."""
    text = str(exc).lower()
    if "disk is full" in text:  # SQLITE_FULL
        return "free space on the disk that holds DEST, then run again"
    if any(w in text for w in ("readonly", "read-only", "permission", "unable to open", "access")):
        return _PERMISSION_HINT
    return "if the file is damaged, " + _MOVE_AWAY_HINT


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection that writes nothing into DEST.

    ``mode=ro`` first: it reads a WAL database consistently (even while a mirror writes)
    as long as SQLite can open the ``-shm`` file, which exists while a writer runs or
    can be created when the directory is writable. When neither holds (another user's
    cleanly closed mirror, a read-only mount), no writer can be active either (a
    writer creates those files), so ``immutable=1`` reads the main file as it is.
    """
    base = path.absolute().as_uri()
    last: StateError | None = None
    for query in ("?mode=ro", "?mode=ro&immutable=1"):
        try:
            conn = sqlite3.connect(
                base + query, uri=True, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise StateError(f"cannot open {path}: {exc}", hint=_hint_for(exc)) from exc
        try:
            _check_and_init(conn, path, create=False, readonly=True)
            return conn
        except StateError as exc:
            conn.close()
            if not isinstance(exc.__cause__, sqlite3.OperationalError):
                raise
            last = exc
    assert last is not None
    raise last


def _check_and_init(
    conn: sqlite3.Connection, path: Path, *, create: bool, readonly: bool = False
) -> None:
    """Validate the file at ``path`` as our database, creating the schema in an empty one.

    The checks read only the header, before anything is written: a foreign file
    must leave this function byte-for-byte untouched (not even switched to WAL).
    ``readonly`` skips every write (the schema, the WAL switch).
    """

    def fail(message: str, exc: BaseException | None = None, hint: str | None = None) -> NoReturn:
        raise StateError(
            message, hint=hint or (_hint_for(exc) if exc is not None else _MOVE_AWAY_HINT)
        ) from exc

    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        app_id, version, n_objects = _header(conn)
        if app_id == 0 and version == 0 and n_objects == 0:
            if not create:
                fail(
                    f"{path} holds no ohpub state (empty database)",
                    hint="run a sync into this DEST first, or check the path",
                )
            app_id, version = _initialise(conn)
        if app_id != APPLICATION_ID:
            fail(
                f"{path} is not an ohpub state database "
                f"(SQLite application_id {app_id:#x}, expected {APPLICATION_ID:#x})"
            )
        if version > SCHEMA_VERSION:
            fail(
                f"{path} was written by a newer ohpub (schema version {version}; "
                f"this ohpub knows up to {SCHEMA_VERSION})",
                hint="upgrade ohpub, or use another DEST",
            )
        if version < 1:
            fail(f"{path} has an invalid ohpub schema version {version}")
        if readonly:
            return
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            fail(
                f"{path}: cannot switch the state database to WAL mode",
                hint="DEST must be on a local filesystem",
            )
        conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        if _hint_for(exc) == _PERMISSION_HINT:
            fail(f"cannot use the state database {path}: {exc}", exc)
        fail(f"{path} is not a usable ohpub state database: {exc}", exc)


def _initialise(conn: sqlite3.Connection) -> tuple[int, int]:
    """Create the schema in an empty database; ``(application_id, user_version)`` after.
    The header is read again under the write lock: another process may have done it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        app_id, version, n_objects = _header(conn)
        if app_id == 0 and version == 0 and n_objects == 0:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            app_id, version = APPLICATION_ID, SCHEMA_VERSION
        conn.execute("COMMIT")
    except BaseException:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return app_id, version


def _header(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(application_id, user_version, number of schema objects). Reading sqlite_master
    is what makes SQLite parse the file, so garbage bytes fail here."""
    n_objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    return int(app_id), int(version), int(n_objects)
