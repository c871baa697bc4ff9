"""Tests for ohpub.state: the state database and the per-DEST lock."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ohpub.local.lock import DestLock, LockHolder, lock_holder
from ohpub.local.state import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    FileState,
    StateDB,
    ensure_dirs,
    ohpub_dir,
    partial_dir,
    stat_fingerprint,
    state_db_path,
)
from ohpub.model.errors import LockedError, StateError, UsageError
from ohpub.model.records import parse_datafile

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_fs(file_id: int = 7, **over: object) -> FileState:
    fields: dict[str, object] = {
        "id": file_id,
        "path": f"alice/176/file-{file_id}.txt",
        "size": 12,
        "mtime_ns": 1_700_000_000_123_456_789,
        "sha256": "ab" * 32,
        "md5": "cd" * 16,
        "etag": "cd" * 16,
        "basename": f"file-{file_id}.txt",
        "created": "2019-01-02T03:04:05.678901Z",
        "user_id": 3,
        "username": "alice",
        "project_id": 176,
        "datatype_ids": [1, 5],
        "metadata": {"tags": ["ü", "x"], "description": "d", "nested": {"a": [1, None]}},
        "raw": {"id": file_id, "basename": f"file-{file_id}.txt", "metadata": {}},
        "first_seen": 1000.5,
        "last_seen": 2000.25,
        "downloaded_at": 1500.0,
        "status": "present",
    }
    fields.update(over)
    return FileState(**fields)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDB]:
    with StateDB.open(tmp_path) as d:
        yield d


# -- layout ------------------------------------------------------------------


def test_dirs(tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    ensure_dirs(dest)
    assert ohpub_dir(dest) == dest / ".ohpub"
    assert partial_dir(dest).is_dir()
    ensure_dirs(dest)  # idempotent


def test_stat_fingerprint(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"hello")
    st = os.stat(f)
    assert stat_fingerprint(f) == (5, st.st_mtime_ns)
    assert stat_fingerprint(tmp_path / "missing") is None
    assert stat_fingerprint(tmp_path) is None  # a directory
    (tmp_path / "link").symlink_to(f)
    assert stat_fingerprint(tmp_path / "link") is None  # lstat: symlinks are not ours
    assert stat_fingerprint(f / "below-a-file") is None


# -- files -------------------------------------------------------------------


def test_round_trip(db: StateDB) -> None:
    fs = make_fs()
    db.put(fs)
    assert db.get(7) == fs
    assert db.get(8) is None
    pending = make_fs(
        8,
        path=None,
        size=None,
        mtime_ns=None,
        sha256=None,
        md5=None,
        etag=None,
        user_id=None,
        username=None,
        project_id=None,
        datatype_ids=[],
        metadata={},
        downloaded_at=None,
        status="pending",
    )
    db.put(pending)
    assert db.get(8) == pending
    assert db.all() == [fs, pending]
    assert [f.path for f in db.all() if f.path] == ["alice/176/file-7.txt"]


def test_put_replaces_and_delete(db: StateDB) -> None:
    db.put(make_fs())
    db.put(make_fs(status="removed-upstream", path=None))
    got = db.get(7)
    assert got is not None and got.status == "removed-upstream" and got.path is None
    assert len(db.all()) == 1
    db.delete(7)
    db.delete(7)  # missing id is fine
    assert db.get(7) is None


def test_download_url_never_stored(tmp_path: Path, db: StateDB) -> None:
    raw = {"id": 7, "download_url": "https://x/?key=SECRET", "basename": "b"}
    db.put(make_fs(raw=raw))
    got = db.get(7)
    assert got is not None and "download_url" not in got.raw
    db.close()
    assert b"SECRET" not in state_db_path(tmp_path).read_bytes()


def test_unknown_status_rejected(db: StateDB) -> None:
    with pytest.raises(ValueError):
        db.put(make_fs(status="bogus"))


def test_put_many_is_one_transaction(db: StateDB) -> None:
    db.put_many([make_fs(i) for i in range(1, 101)])
    assert [f.id for f in db.all()] == list(range(1, 101))
    with pytest.raises(ValueError):
        db.put_many([make_fs(200), make_fs(201, status="bogus")])
    assert db.get(200) is None
    db.put_many([])


def test_put_survives_close_and_reopen(tmp_path: Path) -> None:
    with StateDB.open(tmp_path) as d:
        d.put(make_fs())
    with StateDB.open(tmp_path, create=False) as d:
        assert d.get(7) == make_fs()


def test_from_datafile_strips_download_url() -> None:
    obj = {
        "id": 42,
        "basename": "x.json",
        "created": "2020-05-06T07:08:09Z",
        "download_url": "https://example/x?key=k",
        "metadata": {"tags": ["t"]},
        "source_project": "https://www.openhumans.org/api/public/project/176/",
        "datatypes": ["https://www.openhumans.org/api/public/datatype/9/"],
        "user": {"id": 5, "name": "A", "username": "alice"},
    }
    fs = FileState.from_datafile(parse_datafile(obj), 123.0)
    assert fs.id == 42 and fs.status == "pending" and fs.path is None
    assert fs.created == "2020-05-06T07:08:09Z"
    assert fs.project_id == 176 and fs.datatype_ids == [9] and fs.username == "alice"
    assert "download_url" not in fs.raw and fs.first_seen == fs.last_seen == 123.0



def test_a_record_in_the_servers_order_of_another_day_is_stored_as_the_same_text() -> None:
    """The server sends ``datatypes`` in a different order on every request: the stored
    text is the same for both orders, so a nightly re-run compares records without
    parsing them (and finds them unchanged)."""
    dts = [f"https://www.openhumans.org/api/public/datatype/{d}/" for d in (9, 14, 3)]
    base = {
        "id": 42,
        "basename": "x.json",
        "created": "2020-05-06T07:08:09Z",
        "metadata": {"tags": ["t"]},
        "source_project": "https://www.openhumans.org/api/public/project/176/",
        "user": {"id": 5, "name": "A", "username": "alice"},
    }
    one = FileState.text_of({**base, "datatypes": dts})
    other = FileState.text_of({**base, "datatypes": dts[::-1]})
    assert one == other
    obj = {**base, "datatypes": dts[::-1], "download_url": "https://example/x?key=k"}
    fs = FileState.from_datafile(parse_datafile(obj), 1.0)
    assert fs.stored("raw") == one

def test_threads_share_one_writer(db: StateDB) -> None:
    def work(base: int) -> None:
        for i in range(25):
            db.put(make_fs(base + i))
            db.get(base + i)

    threads = [threading.Thread(target=work, args=(b * 100 + 1,)) for b in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(db.all()) == 100


# -- database identity ---------------------------------------------------------


def test_wal_mode_and_marks(tmp_path: Path) -> None:
    StateDB.open(tmp_path).close()
    conn = sqlite3.connect(state_db_path(tmp_path))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_missing_db_with_create_false(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not an ohpub mirror"):
        StateDB.open(tmp_path, create=False)
    assert not ohpub_dir(tmp_path).exists()  # checking must not create anything


def test_missing_db_next_to_partial_files_is_created(tmp_path: Path) -> None:
    ensure_dirs(tmp_path)
    (partial_dir(tmp_path) / "123.part").write_bytes(b"half")
    with StateDB.open(tmp_path) as d:
        assert d.all() == []
    assert (partial_dir(tmp_path) / "123.part").read_bytes() == b"half"


def test_garbage_file_refused_and_untouched(tmp_path: Path) -> None:
    ensure_dirs(tmp_path)
    path = state_db_path(tmp_path)
    garbage = b"this is not sqlite at all\x00\x01\x02" * 200
    path.write_bytes(garbage)
    for create in (True, False):
        with pytest.raises(StateError) as info:
            StateDB.open(tmp_path, create=create)
        assert str(path) in info.value.message
        assert info.value.hint and "move it away" in info.value.hint
    assert path.read_bytes() == garbage  # never silently started over


def test_foreign_sqlite_refused_and_untouched(tmp_path: Path) -> None:
    ensure_dirs(tmp_path)
    path = state_db_path(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="not an ohpub state database") as info:
        StateDB.open(tmp_path)
    assert str(path) in info.value.message and info.value.hint
    assert path.read_bytes() == before


def test_unmarked_sqlite_with_tables_refused(tmp_path: Path) -> None:
    ensure_dirs(tmp_path)
    conn = sqlite3.connect(state_db_path(tmp_path))
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="not an ohpub state database"):
        StateDB.open(tmp_path)


def test_newer_schema_refused(tmp_path: Path) -> None:
    StateDB.open(tmp_path).close()
    conn = sqlite3.connect(state_db_path(tmp_path))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="newer ohpub") as info:
        StateDB.open(tmp_path)
    assert str(state_db_path(tmp_path)) in info.value.message


def test_empty_file_is_initialised_only_with_create(tmp_path: Path) -> None:
    ensure_dirs(tmp_path)
    state_db_path(tmp_path).write_bytes(b"")
    with pytest.raises(StateError):
        StateDB.open(tmp_path, create=False)
    with StateDB.open(tmp_path) as d:
        d.put(make_fs())


# -- runs ------------------------------------------------------------------------


def test_runs(db: StateDB) -> None:
    assert db.last_run() is None
    assert db.last_run(complete_only=True) is None
    t0 = time.time()
    r1 = db.begin_run("sync", {"project": [176]})
    db.end_run(r1, "ok", {"downloaded": 3, "failed": 0}, True)
    r2 = db.begin_run("sync", {"project": [176], "limit": 1})
    run = db.last_run()
    assert run is not None and run.id == r2 and run.ended is None and not run.complete
    assert run.scope == {"project": [176], "limit": 1} and run.counts == {}
    db.end_run(r2, "interrupted", {"downloaded": 1}, False)
    last = db.last_run()
    assert last is not None and last.id == r2 and last.outcome == "interrupted"
    assert last.ended is not None and last.ended >= last.started
    done = db.last_run(complete_only=True)
    assert done is not None and done.id == r1 and done.complete
    assert done.command == "sync" and done.outcome == "ok"
    assert done.counts == {"downloaded": 3, "failed": 0} and done.started >= t0 - 1
    with pytest.raises(ValueError):
        db.end_run(12345, "ok", {}, True)


# -- lock ------------------------------------------------------------------------


def test_lock_in_process(tmp_path: Path) -> None:
    first = DestLock(tmp_path)
    first.acquire()
    try:
        second = DestLock(tmp_path)
        t0 = time.monotonic()
        with pytest.raises(LockedError, match=f"pid {os.getpid()}") as info:
            second.acquire()
        assert time.monotonic() - t0 < 1.0
        assert isinstance(info.value, LockedError) and info.value.hint
        assert not second.held
    finally:
        first.release()
    with DestLock(tmp_path) as again:
        assert again.held
    assert not again.held
    again.release()  # harmless when not held


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ohpub.local.lock import DestLock
    lock = DestLock(Path(sys.argv[1]))
    lock.acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def _start_holder(dest: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(dest)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "locked":
        proc.kill()
        proc.wait()
        pytest.fail(f"lock holder did not start: {line!r}")
    return proc


def test_lock_held_by_other_process_then_sigkill(tmp_path: Path) -> None:
    proc = _start_holder(tmp_path)
    try:
        t0 = time.monotonic()
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            DestLock(tmp_path).acquire()
        assert time.monotonic() - t0 < 1.0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    lock = DestLock(tmp_path)
    lock.acquire()  # the kernel dropped the dead run's lock: no stale lock
    assert (ohpub_dir(tmp_path) / "lock").read_text().strip() == str(os.getpid())
    lock.release()


# -- statuses verify records, read-only opening, lock probing (issues 12 and 14) ----------------


def test_verify_statuses_are_accepted(db: StateDB) -> None:
    db.put_many([make_fs(1, status="modified"), make_fs(2, status="missing")])
    assert {fs.id: fs.status for fs in db.all()} == {1: "modified", 2: "missing"}


def test_read_only_open_writes_nothing_and_refuses_writes_without_move_away(
    tmp_path: Path,
) -> None:
    with StateDB.open(tmp_path) as db:
        db.put(make_fs(1))
    files = {p.name: p.read_bytes() for p in ohpub_dir(tmp_path).iterdir() if p.is_file()}
    with StateDB.open(tmp_path, create=False, readonly=True) as ro:
        assert ro.readonly and [fs.id for fs in ro.all()] == [1]
        with pytest.raises(StateError) as info:
            ro.put(make_fs(2))
        assert info.value.hint and "move it away" not in info.value.hint
    after = {p.name: p.read_bytes() for p in ohpub_dir(tmp_path).iterdir() if p.is_file()}
    # The database is untouched; in a writable folder SQLite may leave its (empty) WAL
    # side files behind, as any reader does; the next writer takes them over.
    assert {k: v for k, v in after.items() if not k.endswith(("-wal", "-shm"))} == files
    assert after.get("state.sqlite3-wal", b"") == b""


def test_symlinked_state_database_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.sqlite3"
    dest = tmp_path / "dest"
    ensure_dirs(dest)
    os.symlink(outside, state_db_path(dest))
    with pytest.raises(UsageError, match="symlink"):
        StateDB.open(dest)
    assert not outside.exists()


def test_lock_holder_probe(tmp_path: Path) -> None:
    assert lock_holder(tmp_path) is None  # no lock file at all
    with DestLock(tmp_path, command="verify"):
        assert lock_holder(tmp_path) == LockHolder(os.getpid(), "verify")
    assert lock_holder(tmp_path) is None  # the file remains; nobody holds it
    with DestLock(tmp_path):
        assert lock_holder(tmp_path) == LockHolder(os.getpid(), "mirror")
        assert (ohpub_dir(tmp_path) / "lock").read_text().strip() == str(os.getpid())


def test_symlinked_lock_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    dest = tmp_path / "dest"
    ensure_dirs(dest)
    os.symlink(victim, ohpub_dir(dest) / "lock")
    with pytest.raises(UsageError, match="symlink"):
        DestLock(dest).acquire()
    assert victim.read_bytes() == b"keep"
    assert lock_holder(dest) is None
