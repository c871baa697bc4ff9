"""Crashes and the local machine (issue 4): kill -9, Ctrl-C, full disks, file-size limits,
bad destinations, concurrent runs and a damaged state database.

The kill tests run ``python -m ohpub mirror`` as a real subprocess against the local Open
Humans server and kill it at chosen points; the rerun goes through the CLI in-process.
Mount-based tests (tmpfs, read-only bind mounts) need root; they skip with the reason
otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    FAST_RETRY,
    add_big_file,
    content_of,
    jsonl,
    run_cli,
    start_mirror,
    tree,
)

REPO = Path(__file__).resolve().parent.parent


def wait_until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError("condition never came true")


def mirror(server: Any, dest: Path, *args: str) -> Any:
    return run_cli(server, ["mirror", str(dest), *args], env=FAST_RETRY)


def partials(dest: Path) -> list[Path]:
    d = dest / ".ohpub" / "partial"
    return [p for p in d.iterdir() if p.suffix != ".json"] if d.is_dir() else []


def assert_consistent(server: Any, dest: Path, ids: list[int]) -> None:
    """Tree, state and verify agree, and every listed file has the server's bytes."""
    files = tree(dest)
    want = sorted(hashlib.sha256(content_of(server, i)).hexdigest() for i in ids)
    assert sorted(hashlib.sha256(b).hexdigest() for b in files.values()) == want
    ver = run_cli(server, ["verify", str(dest), "-f", "jsonl"])
    assert ver.code == 0, ver.stdout + ver.stderr
    recs = jsonl(ver.stdout)
    assert {r["status"] for r in recs} == {"ok"}
    assert sorted(r["path"] for r in recs) == sorted(files)
    st = run_cli(server, ["status", str(dest), "-f", "json"])
    assert json.loads(st.stdout)["files"] == len(ids)
    index = jsonl((dest / "index.jsonl").read_text())
    assert sorted(r["path"] for r in index if r["status"] == "present") == sorted(files)


class FinalPathWatcher:
    """Polls every file at a final path while a run goes, and records any whose bytes are
    not the complete content of some file (a partial file at a final path)."""

    def __init__(self, dest: Path, contents: list[bytes]) -> None:
        self.dest = dest
        self.good = {hashlib.sha256(c).hexdigest() for c in contents}
        self.bad: list[str] = []
        self.seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> FinalPathWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for root, dirs, files in os.walk(self.dest):
                if root == str(self.dest):
                    dirs[:] = [d for d in dirs if d != ".ohpub"]
                for name in files:
                    p = Path(root) / name
                    if p.parent == self.dest and name == "index.jsonl":
                        continue
                    try:
                        data = p.read_bytes()
                    except OSError:
                        continue  # renamed away between walk and read
                    self.seen += 1
                    if hashlib.sha256(data).hexdigest() not in self.good:
                        self.bad.append(f"{p.relative_to(self.dest)} ({len(data)} bytes)")
            time.sleep(0.002)


# -- kill -9 ---------------------------------------------------------------------------------


def _n_final(dest: Path) -> int:
    return len(tree(dest))


KILL_POINTS: list[Any] = [
    pytest.param("listing", id="during-listing"),
    pytest.param("partial", id="first-partial-on-disk"),
    pytest.param("placed-1", id="after-first-file-placed"),
    pytest.param("placed-half", id="after-half-placed"),
    pytest.param("rename", id="incremental-run-with-renames"),
    *[
        pytest.param(f"random-{d:.2f}", id=f"random-{d:.2f}s")
        for d in random.Random(4).sample([x / 20 for x in range(4, 30)], 2)
    ],
]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_9_then_rerun_tree_state_and_verify_agree(
    oh_server: Any, tmp_path: Path, point: str
) -> None:
    ids = oh_server.generate(8, 3, 60_000, 250_000, project_id=300, seed=5)
    dest = tmp_path / "m"
    all_contents = [content_of(oh_server, i) for i in ids]
    if point == "rename":
        # A complete mirror first; then new uploads take the plain names of old files and a
        # member hides the membership, so the killed run has renames to do.
        assert mirror(oh_server, dest, "-p", "300").code == 0
        for fid in ids[:3]:
            f = oh_server.file(fid)
            new = oh_server.add_file(
                basename=f.basename,
                content=f"new version of {fid}\n".encode() * 5000,
                project_id=300,
                username=f.username,
            )
            ids.append(new)
            all_contents.append(content_of(oh_server, new))
        oh_server.hide_membership(oh_server.file(ids[-1]).username, 300)
    oh_server.faults.bandwidth = 600_000
    if point == "listing":
        oh_server.faults.latency["api"] = 0.3
    t0 = time.time()
    with FinalPathWatcher(dest, all_contents) as watcher:
        proc = start_mirror(oh_server, dest, "-p", "300", "-j", "2")
        try:
            if point == "listing":
                wait_until(lambda: oh_server.in_flight["api"] > 0)
            elif point == "partial":
                wait_until(lambda: bool(partials(dest)) and partials(dest)[0].stat().st_size > 0)
            elif point == "placed-1":
                wait_until(lambda: dest.exists() and _n_final(dest) >= 1)
            elif point == "placed-half":
                wait_until(lambda: dest.exists() and _n_final(dest) >= len(ids) // 2)
            elif point == "rename":
                wait_until(lambda: any(e.role == "storage" and e.start > t0 for e in oh_server.log))
            else:
                time.sleep(float(point.split("-")[1]))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        oh_server.faults.clear()
        res = mirror(oh_server, dest, "-p", "300")
    assert res.code == 0, res.stderr
    assert watcher.bad == [], "partial bytes at a final path"
    listed = oh_server.file_ids(public_only=True)
    assert_consistent(oh_server, dest, [i for i in listed if oh_server.file(i).project_id == 300])
    assert partials(dest) == []


# -- Ctrl-C and SIGTERM ----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_exits_130_or_143_keeps_partial_and_rerun_resumes(
    oh_server: Any, tmp_path: Path, sig: int
) -> None:
    fid = add_big_file(oh_server, 4_000_000)
    oh_server.faults.bandwidth = 2_000_000
    proc = start_mirror(oh_server, tmp_path, "-p", "600")
    part = tmp_path / ".ohpub/partial" / str(fid)
    wait_until(lambda: part.exists() and part.stat().st_size >= 300_000)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
    assert b"Traceback" not in err
    assert b"ohpub: interrupted" in err
    kept = part.stat().st_size
    assert kept >= 300_000
    assert tree(tmp_path) == {}
    st = json.loads(run_cli(oh_server, ["status", str(tmp_path), "-f", "json"]).stdout)
    assert st["last_run"]["outcome"] == "interrupted"
    oh_server.faults.bandwidth = None
    t0 = time.time()
    res = mirror(oh_server, tmp_path, "-p", "600", "-f", "jsonl")
    assert res.code == 0, res.stderr
    assert jsonl(res.stdout)[0]["status"] == "resumed"
    gets = [e for e in oh_server.log if e.role == "storage" and e.start >= t0]
    assert len(gets) == 1 and gets[0].headers["range"] == f"bytes={kept}-"
    assert_consistent(oh_server, tmp_path, [fid])


# -- full disk and file-size limit -----------------------------------------------------------


def _mount(args: list[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a filesystem (tmpfs / read-only bind mount)")
    res = subprocess.run(["mount", *args], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"mount is not allowed here: {res.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (ENOSPC comes quickly); unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)])
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_names_the_file_keeps_partial_and_rerun_completes(
    oh_server: Any, small_fs: Path
) -> None:
    fid = add_big_file(oh_server, 2_500_000)
    oh_server.add_file(
        basename="small.txt", content=b"s" * 1000, project_id=600, username="bob_smith"
    )
    dest = small_fs / "m"
    res = mirror(oh_server, dest, "-p", "600", "-j", "1")
    assert res.code == 1
    assert "Traceback" not in res.stderr
    assert "No space left on device" in res.stderr
    assert "alice/600/big.bin" in res.stderr  # which file
    assert "move it away" not in res.stderr  # never advice to drop the state on a full disk
    assert "alice/600/big.bin" not in tree(dest)
    kept = (dest / ".ohpub/partial" / str(fid)).stat().st_size
    assert kept > 0
    ver = run_cli(oh_server, ["verify", str(dest)])
    assert ver.code == 0, ver.stdout + ver.stderr  # the state agrees with the disk
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_fs)], check=True)
    again = mirror(oh_server, dest, "-p", "600", "-f", "jsonl")
    assert again.code == 0, again.stderr
    assert {r["id"]: r["status"] for r in jsonl(again.stdout)}[fid] == "resumed"
    assert_consistent(oh_server, dest, [fid, fid + 1])


def test_file_size_limit_names_the_file_keeps_partial_and_rerun_completes(
    oh_server: Any, tmp_path: Path
) -> None:
    fid = add_big_file(oh_server, 2_500_000)
    limit = 1_000_000

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = start_mirror(oh_server, tmp_path, "-p", "600", preexec=cap)
    _out, err_b = proc.communicate(timeout=60)
    err = err_b.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert "File too large" in err and "alice/600/big.bin" in err
    assert tree(tmp_path) == {}
    assert (tmp_path / ".ohpub/partial" / str(fid)).stat().st_size == limit
    res = mirror(oh_server, tmp_path, "-p", "600", "-f", "jsonl")
    assert res.code == 0, res.stderr
    assert jsonl(res.stdout)[0]["status"] == "resumed"
    assert_consistent(oh_server, tmp_path, [fid])


# -- bad destinations ------------------------------------------------------------------------


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """Make a read-only view of a directory (a read-only bind mount; chmod does not stop
    root). Returns the mount point."""
    mounted: list[Path] = []

    def make(src: Path) -> Path:
        mnt = tmp_path / f"ro{len(mounted)}"
        mnt.mkdir()
        _mount(["--bind", str(src), str(mnt)])
        mounted.append(mnt)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], check=True)
        return mnt

    yield make
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_read_only_dest_exits_2(
    oh_server: Any, tmp_path: Path, read_only: Callable[[Path], Path]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    assert mirror(oh_server, src, "-p", "128").code == 0
    before = tree(src)
    ro = read_only(src)  # a populated mirror, now on a read-only filesystem
    oh_server.clear_log()
    res = mirror(oh_server, ro, "-p", "128")
    assert res.code == 2, res.stderr
    assert res.stderr.startswith("ohpub: error:") and "not writable" in res.stderr
    assert oh_server.count() == 0
    (src / "empty").mkdir()
    res = mirror(oh_server, read_only(src / "empty"), "-p", "128")
    assert res.code == 2 and "not writable" in res.stderr
    res = mirror(oh_server, ro / "new", "-p", "128")  # cannot even be created
    assert res.code == 2 and "cannot create" in res.stderr
    assert tree(src) == before


def test_dest_that_is_a_file_or_has_no_parent_exits_2(oh_server: Any, tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_bytes(b"mine")
    res = mirror(oh_server, afile, "-p", "128")
    assert res.code == 2 and "not a directory" in res.stderr
    assert afile.read_bytes() == b"mine"
    res = mirror(oh_server, tmp_path / "no/such/parent", "-p", "128")
    assert res.code == 2 and "does not exist" in res.stderr
    assert not (tmp_path / "no").exists()
    res = mirror(oh_server, afile / "below", "-p", "128")
    assert res.code == 2, res.stderr
    assert oh_server.count() == 0


# -- two runs at once ------------------------------------------------------------------------


def test_second_concurrent_mirror_exits_3_at_once(oh_server: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, 2_000_000)
    oh_server.faults.stall[fid] = (200_000, 60.0, 1)  # the first run sits mid-download
    proc = start_mirror(oh_server, tmp_path, "-p", "600")
    try:
        part = tmp_path / ".ohpub/partial" / str(fid)
        wait_until(lambda: part.exists() and part.stat().st_size >= 200_000)
        seen = len(oh_server.log)
        res = mirror(oh_server, tmp_path, "-p", "600")
        assert res.code == 3
        assert res.stderr.startswith("ohpub: error:") and "locked" in res.stderr
        assert f"pid {proc.pid}" in res.stderr
        assert len(oh_server.log) == seen  # not a single request: it stopped at once
        assert part.stat().st_size >= 200_000  # and touched nothing
    finally:
        proc.kill()
        proc.wait()
    # The killed run's lock file is still there, with its pid; it blocks nothing.
    assert (tmp_path / ".ohpub/lock").read_text().strip() == str(proc.pid)
    oh_server.faults.clear()
    res = mirror(oh_server, tmp_path, "-p", "600", "-f", "jsonl")
    assert res.code == 0, res.stderr
    assert jsonl(res.stdout)[0]["status"] == "resumed"
    assert_consistent(oh_server, tmp_path, [fid])


# -- a damaged state database ----------------------------------------------------------------


def _garbage(db: Path) -> None:
    db.write_bytes(b"this is not a database\n" * 100)


def _foreign(db: Path) -> None:
    db.unlink()
    for extra in db.parent.glob("state.sqlite3-*"):
        extra.unlink()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO photos (name) VALUES ('holiday.jpg')")
    conn.commit()
    conn.close()


def _newer(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()


def _truncated(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])


def _emptied(db: Path) -> None:
    db.write_bytes(b"")
    for extra in db.parent.glob("state.sqlite3-*"):
        extra.unlink()


def _deleted(db: Path) -> None:
    db.unlink()
    for extra in db.parent.glob("state.sqlite3-*"):
        extra.unlink()


@pytest.mark.parametrize(
    "damage",
    [_garbage, _foreign, _newer, _truncated, _emptied, _deleted],
    ids=["garbage", "foreign-sqlite", "newer-schema", "truncated", "empty-file", "deleted"],
)
def test_damaged_state_database_is_refused_never_started_over(
    oh_server: Any, tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    assert mirror(oh_server, tmp_path, "-p", "102").code == 0
    db = tmp_path / ".ohpub/state.sqlite3"
    damage(db)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
    oh_server.clear_log()
    res = mirror(oh_server, tmp_path, "-p", "102")
    assert res.code == 1, res.stderr
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("ohpub: error:")]
    assert len(errors) == 1 and "state" in errors[0], res.stderr
    assert oh_server.count(role="storage") == 0 and oh_server.count(role="download") == 0
    after = {
        p: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in tmp_path.rglob("*")
        if p.is_file() and p.name != "lock"
    }
    assert after == {p: v for p, v in before.items() if p.name != "lock"}
