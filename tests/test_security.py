"""Nothing below DEST is followed when it is a symlink (issue 14, items 1, 2 and 7).

Each test plants a symlink where ohpub keeps its own files (``.ohpub`` itself, the lock,
the partial folder, the state database and its side files, the index) pointing at a file
or folder outside DEST, runs ohpub through the CLI, and checks what a user (or an
attacker) would see: the exit code, the message, and that the outside file or folder is
byte-for-byte untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FAST_RETRY, add_big_file, content_of, run_cli, tree

PRECIOUS = b"precious: not ohpub's to write\n"


def mirror(server: Any, dest: Path, *args: str) -> Any:
    return run_cli(server, ["mirror", str(dest), "-p", "102", *args], env=FAST_RETRY)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside DEST holding one precious file."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "victim.txt").write_bytes(PRECIOUS)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def assert_refused(res: Any, what: str) -> None:
    assert res.code == 2, res.stdout + res.stderr
    assert res.stderr.startswith("ohpub: error:"), res.stderr
    assert what in res.stderr and "symlink" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


# -- DEST/.ohpub itself ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["mirror", "verify", "status"])
def test_symlinked_ohpub_dir_is_refused(
    oh_server: Any, tmp_path: Path, outside: Path, command: str
) -> None:
    dest = tmp_path / "dest"
    if command == "mirror":
        dest.mkdir()
        os.symlink(outside, dest / ".ohpub")
    else:  # an existing mirror whose .ohpub was swapped for a link to a copy elsewhere
        assert mirror(oh_server, dest).code == 0
        os.rename(dest / ".ohpub", outside / "theirs")
        os.symlink(outside / "theirs", dest / ".ohpub")
    before = snapshot(outside)
    args = [command, str(dest)] + (["-p", "102"] if command == "mirror" else [])
    res = run_cli(oh_server, args, env=FAST_RETRY)
    assert_refused(res, ".ohpub")
    assert "refusing" in res.stderr
    assert snapshot(outside) == before
    assert sorted(p.name for p in outside.iterdir()) == sorted(
        ["victim.txt"] + ([] if command == "mirror" else ["theirs"])
    )
    if command == "mirror":
        assert oh_server.count() == 0  # refused before the first request
        assert tree(dest) == {}


# -- the lock ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["mirror", "verify"])
def test_symlinked_lock_is_refused_and_never_truncated(
    oh_server: Any, tmp_path: Path, outside: Path, command: str
) -> None:
    dest = tmp_path / "dest"
    assert mirror(oh_server, dest).code == 0
    (dest / ".ohpub/lock").unlink()
    os.symlink(outside / "victim.txt", dest / ".ohpub/lock")
    args = [command, str(dest)] + (["-p", "102"] if command == "mirror" else [])
    res = run_cli(oh_server, args, env=FAST_RETRY)
    assert_refused(res, "lock")
    assert (outside / "victim.txt").read_bytes() == PRECIOUS  # not truncated, no pid in it


def test_fifo_at_the_lock_is_refused_without_hanging(oh_server: Any, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    assert mirror(oh_server, dest).code == 0
    (dest / ".ohpub/lock").unlink()
    os.mkfifo(dest / ".ohpub/lock")
    res = mirror(oh_server, dest)
    assert res.code == 2 and "lock" in res.stderr and "not a regular file" in res.stderr


# -- the partial folder --------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["fresh-dest", "existing-mirror"])
def test_symlinked_partial_folder_is_refused(
    oh_server: Any, tmp_path: Path, outside: Path, when: str
) -> None:
    fid = add_big_file(oh_server, 2_000_000)  # big enough for a resume sidecar
    dest = tmp_path / "dest"
    if when == "existing-mirror":
        assert mirror(oh_server, dest).code == 0
        (dest / ".ohpub/partial").rmdir()
    else:
        (dest / ".ohpub").mkdir(parents=True)
    os.symlink(outside, dest / ".ohpub/partial")
    before = snapshot(outside)
    oh_server.clear_log()
    res = run_cli(oh_server, ["mirror", str(dest), "-p", "600"], env=FAST_RETRY)
    assert_refused(res, "partial")
    assert snapshot(outside) == before
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]  # no <id>, no <id>.json
    assert oh_server.count() == 0
    assert "alice/600/big.bin" not in tree(dest), fid


# -- the state database and its side files ------------------------------------------------------


@pytest.mark.parametrize("name", ["state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"])
@pytest.mark.parametrize("command", ["mirror", "status"])
def test_symlinked_state_database_files_are_refused(
    oh_server: Any, tmp_path: Path, outside: Path, name: str, command: str
) -> None:
    dest = tmp_path / "dest"
    assert mirror(oh_server, dest).code == 0
    planted = dest / ".ohpub" / name
    if name == "state.sqlite3":  # the real database, moved outside and linked back
        os.rename(planted, outside / name)
        os.symlink(outside / name, planted)
    else:
        assert not planted.exists()  # a clean close leaves no side files
        os.symlink(outside / "victim.txt", planted)
    before = snapshot(outside)
    args = [command, str(dest)] + (["-p", "102"] if command == "mirror" else [])
    res = run_cli(oh_server, args, env=FAST_RETRY)
    assert_refused(res, name)
    assert snapshot(outside) == before
    moved = {name} if name == "state.sqlite3" else set()
    assert sorted(p.name for p in outside.iterdir()) == sorted({"victim.txt"} | moved)


# -- the index ---------------------------------------------------------------------------------


@pytest.mark.parametrize("planted", ["index.jsonl", ".ohpub/index.jsonl.tmp"])
def test_symlink_at_the_index_is_replaced_never_followed(
    oh_server: Any, tmp_path: Path, outside: Path, planted: str
) -> None:
    dest = tmp_path / "dest"
    assert mirror(oh_server, dest).code == 0
    (dest / planted).unlink(missing_ok=True)
    os.symlink(outside / "victim.txt", dest / planted)
    oh_server.add_file(basename="new.txt", content=b"n" * 10, project_id=102, username="alice")
    res = mirror(oh_server, dest)  # a new file: the index is rewritten
    assert res.code == 0, res.stderr
    assert (outside / "victim.txt").read_bytes() == PRECIOUS
    index = dest / "index.jsonl"
    assert not index.is_symlink() and b'"new.txt"' in index.read_bytes()
    assert not os.path.lexists(dest / ".ohpub/index.jsonl.tmp")


# -- fetch at the file system's name limit -----------------------------------------------------


@pytest.mark.parametrize("size", [1000, 2_000_000], ids=["small", "with-sidecar"])
def test_fetch_of_a_255_byte_name(oh_server: Any, tmp_path: Path, size: int) -> None:
    name = "n" * 249 + "é.bin"  # 255 bytes in UTF-8
    assert len(name.encode()) == 255
    fid = add_big_file(oh_server, size, basename=name)
    out = tmp_path / "out"
    res = run_cli(oh_server, ["fetch", str(fid), "-d", str(out)], env=FAST_RETRY)
    assert res.code == 0, res.stderr
    assert "too long" not in res.stderr
    assert sorted(os.listdir(out)) == [name]  # the file, and no partial left behind
    assert (out / name).read_bytes() == content_of(oh_server, fid)


def test_fetch_of_a_255_byte_name_resumes_in_a_second_run(oh_server: Any, tmp_path: Path) -> None:
    name = "r" * 251 + ".bin"
    fid = add_big_file(oh_server, 3_000_000, basename=name)
    oh_server.faults.reset_after[fid] = (1_200_000, 100)  # every transfer cut at 1.2 MB
    out = tmp_path / "out"
    args = ["fetch", str(fid), "-d", str(out)]
    res = run_cli(oh_server, ["--retries", "1", *args], env=FAST_RETRY)
    assert res.code == 1 and "too long" not in res.stderr, res.stderr
    (part,) = [n for n in os.listdir(out) if not n.endswith(".json")]
    assert str(fid) in part and len(part.encode()) + len(".json.tmp") <= 255
    assert (out / part).stat().st_size > 0
    oh_server.faults.clear()
    res = run_cli(oh_server, args, env=FAST_RETRY)
    assert res.code == 0, res.stderr
    assert "resumed" in res.stderr
    assert sorted(os.listdir(out)) == [name]
    assert (out / name).read_bytes() == content_of(oh_server, fid)
