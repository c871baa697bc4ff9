"""Read-only use (issue 12, item 4): ``status`` and ``verify`` on a mirror the user cannot
write, another account's mirror or a read-only mount, work and write nothing; no message
suggests moving the state database away as the fix for a permission problem.

The tests run as root here, so "another user" is a forked child that switches to
``nobody`` before running the CLI in-process (an exec'd interpreter could not even be
started: the Python installation may sit under root's private home). They skip when not
run as root; the read-only bind mount skips where mounting is not allowed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FAST_RETRY, CliResult, run_cli

NOBODY = 65534


def as_nobody(args: list[str], server: Any = None) -> CliResult:
    """Run ``ohpub ARGS`` as user and group ``nobody`` (in a forked child)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a command as another user")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            res = run_cli(server, args, env=FAST_RETRY)
            out = {"code": res.code, "stdout": res.stdout, "stderr": res.stderr}
        except BaseException as exc:  # report, whatever it is
            out = {"code": -1, "stdout": "", "stderr": f"child failed: {exc!r}"}
        with os.fdopen(w, "w") as fh:
            fh.write(json.dumps(out))
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    got = json.loads(data)
    return CliResult(got["code"], got["stdout"], got["stderr"], got["stdout"].encode())


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime (ohpub's own included): "wrote nothing" means this
    does not change."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def shared_mirror(oh_server: Any) -> Iterator[Path]:
    """A mirror made by root in a folder everyone may read (pytest's tmp_path is private)."""
    base = Path(tempfile.mkdtemp(prefix="ohpub-ro-", dir="/tmp"))
    try:
        base.chmod(0o755)
        dest = base / "m"
        res = run_cli(oh_server, ["mirror", str(dest), "-p", "102"], env=FAST_RETRY)
        assert res.code == 0, res.stderr
        yield dest
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_status_of_another_users_mirror(shared_mirror: Path) -> None:
    before = snapshot(shared_mirror)
    res = as_nobody(["status", str(shared_mirror), "--max-age", "1h"])
    assert res.code == 0, res.stderr
    assert res.stdout.startswith("files: 4 ")
    assert "last run: ok" in res.stdout and "fresh" in res.stdout
    assert res.stderr == ""
    assert snapshot(shared_mirror) == before


def test_verify_of_another_users_mirror_reports_and_writes_nothing(shared_mirror: Path) -> None:
    res = as_nobody(["verify", str(shared_mirror)])
    assert res.code == 0, res.stderr
    assert "verified 4 files: 4 ok" in res.stderr
    victim = shared_mirror / "bob_smith/102/fitbit-data.json"
    st = victim.stat()
    victim.write_bytes(b"X" * st.st_size)  # same size and mtime: only a re-hash sees it
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = snapshot(shared_mirror)
    res = as_nobody(["verify", str(shared_mirror)])
    assert res.code == 1, res.stderr
    assert "modified: bob_smith/102/fitbit-data.json" in res.stdout
    assert "Traceback" not in res.stderr and "error" not in res.stderr
    assert snapshot(shared_mirror) == before  # not recorded: nobody may not write here


def test_unreadable_state_database_blames_permissions_not_the_file(shared_mirror: Path) -> None:
    (shared_mirror / ".ohpub/state.sqlite3").chmod(0o600)
    for command in ("status", "verify"):
        res = as_nobody([command, str(shared_mirror)])
        assert res.code in (1, 2), res.stderr
        assert res.stderr.startswith("ohpub: error:"), res.stderr
        assert "move it away" not in res.stderr
        assert "permission" in res.stderr.lower() or "may read" in res.stderr, res.stderr


def test_mirror_into_another_users_mirror_never_suggests_moving_state(
    oh_server: Any, shared_mirror: Path
) -> None:
    res = as_nobody(["mirror", str(shared_mirror), "-p", "102"])
    assert res.code == 2, res.stderr
    assert "writable" in res.stderr and "move it away" not in res.stderr


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[Any]:
    """A read-only bind mount of a folder (chmod does not stop root); skips if not allowed."""
    mounted: list[Path] = []

    def make(src: Path) -> Path:
        if os.geteuid() != 0:
            pytest.skip("needs root to make a read-only bind mount")
        mnt = tmp_path / f"ro{len(mounted)}"
        mnt.mkdir()
        res = subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"mount is not allowed here: {res.stderr.decode().strip()}")
        mounted.append(mnt)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], check=True)
        return mnt

    yield make
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_status_and_verify_on_a_read_only_mount(
    oh_server: Any, tmp_path: Path, read_only_view: Any
) -> None:
    src = tmp_path / "src"
    assert run_cli(oh_server, ["mirror", str(src), "-p", "102"], env=FAST_RETRY).code == 0
    (src / ".ohpub/lock").unlink()  # a mirror copied without its lock file: none creatable
    before = snapshot(src)
    ro = read_only_view(src)
    st = run_cli(None, ["status", str(ro), "--max-age", "1h", "-f", "json"])
    assert st.code == 0, st.stderr
    assert json.loads(st.stdout)["files"] == 4
    ver = run_cli(None, ["verify", str(ro)])
    assert ver.code == 0, ver.stderr
    assert "verified 4 files: 4 ok" in ver.stderr
    assert "move it away" not in st.stderr + ver.stderr
    assert snapshot(src) == before


def test_verify_on_a_read_only_mount_with_its_lock_file(
    oh_server: Any, tmp_path: Path, read_only_view: Any
) -> None:
    src = tmp_path / "src"
    assert run_cli(oh_server, ["mirror", str(src), "-p", "102"], env=FAST_RETRY).code == 0
    (src / "alice/102/fitbit-data.json").unlink()
    ro = read_only_view(src)
    ver = run_cli(None, ["verify", str(ro), "-f", "jsonl"])
    assert ver.code == 1, ver.stderr
    by_path = {r["path"]: r["status"] for r in map(json.loads, ver.stdout.splitlines())}
    assert by_path["alice/102/fitbit-data.json"] == "missing"
    assert "error" not in ver.stderr


def test_dry_run_on_another_users_mirror(oh_server: Any, shared_mirror: Path) -> None:
    oh_server.add_file(basename="new.txt", content=b"n" * 10, project_id=102, username="alice")
    before = snapshot(shared_mirror)
    res = as_nobody(["mirror", str(shared_mirror), "-p", "102", "--dry-run"], oh_server)
    assert res.code == 0, res.stderr
    assert "1 to download (10 B)" in res.stderr and "4 unchanged" in res.stderr
    assert snapshot(shared_mirror) == before
