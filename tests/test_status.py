"""``status``: what "fresh" means (issue 9, bug 4), a running mirror shown as running with
its pid (issue 12, item 4), and what ``verify`` records for the next mirror (issue 14,
"Repairs", the verify half)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ohpub.local.lock import DestLock
from tests.helpers import FAST_RETRY, add_big_file, run_cli, start_mirror
from tests.test_readonly import as_nobody


def mirror(server: Any, dest: Path, *args: str) -> Any:
    return run_cli(server, ["mirror", str(dest), *args], env=FAST_RETRY)


def status(dest: Path, *args: str) -> Any:
    return run_cli(None, ["status", str(dest), *args])


def wait_until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError("condition never came true")


# -- what "fresh" means ------------------------------------------------------------------------


def test_max_age_is_stale_after_a_run_whose_downloads_failed(
    oh_server: Any, tmp_path: Path
) -> None:
    oh_server.faults.corrupt.update({1, 2, 4, 6})  # every storage body is damaged
    res = mirror(oh_server, tmp_path, "-p", "102")
    assert res.code == 1  # the listing was complete; the downloads failed
    st = status(tmp_path, "--max-age", "1h")
    assert st.code == 1, st.stdout
    assert "STALE" in st.stdout and "failed" in st.stdout
    data = json.loads(status(tmp_path, "--max-age", "1h", "-f", "json").stdout)
    assert data["stale"] is True and data["last_run"]["complete"] is True
    oh_server.faults.clear()
    assert mirror(oh_server, tmp_path, "-p", "102").code == 0
    st = status(tmp_path, "--max-age", "1h")
    assert st.code == 0, st.stdout
    assert st.stdout.rstrip().endswith("fresh")


def test_max_age_is_stale_after_a_killed_run(oh_server: Any, tmp_path: Path) -> None:
    assert mirror(oh_server, tmp_path, "-p", "102").code == 0
    assert status(tmp_path, "--max-age", "1h").code == 0
    fid = add_big_file(oh_server, 2_000_000)
    oh_server.faults.stall[fid] = (200_000, 60.0, 1)
    proc = start_mirror(oh_server, tmp_path, "-p", "600")
    try:
        part = tmp_path / ".ohpub/partial" / str(fid)
        wait_until(lambda: part.exists() and part.stat().st_size >= 200_000)
    finally:
        proc.kill()
        proc.wait()
    st = status(tmp_path, "--max-age", "1h")
    assert st.code == 1, st.stdout
    assert "last run: did not finish" in st.stdout and "STALE" in st.stdout
    assert "running" not in st.stdout


def test_max_age_without_any_run_is_stale(oh_server: Any, tmp_path: Path) -> None:
    oh_server.faults.script(role="api", statuses=[503] * 50)
    assert mirror(oh_server, tmp_path, "-p", "102").code == 1  # not even a listing
    st = status(tmp_path, "--max-age", "1h")
    assert st.code == 1 and "STALE" in st.stdout


# -- a running mirror --------------------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder everyone may read, for the checks made as ``nobody``."""
    base = Path(tempfile.mkdtemp(prefix="ohpub-st-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base / "m"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_status_shows_a_running_mirror_with_its_pid(oh_server: Any, shared_dir: Path) -> None:
    dest = shared_dir
    assert mirror(oh_server, dest, "-p", "102").code == 0
    fid = add_big_file(oh_server, 2_000_000)
    oh_server.faults.stall[fid] = (200_000, 60.0, 1)  # the second run sits mid-download
    proc = start_mirror(oh_server, dest, "-p", "102", "-p", "600")
    try:
        part = dest / ".ohpub/partial" / str(fid)
        wait_until(lambda: part.exists() and part.stat().st_size >= 200_000)
        st = status(dest, "--max-age", "1h")
        assert st.code == 0, st.stdout  # judged on the last run that is over: it was ok
        assert f"running: mirror (pid {proc.pid})" in st.stdout
        assert "last run: running" in st.stdout and "did not finish" not in st.stdout
        data = json.loads(status(dest, "-f", "json").stdout)
        assert data["running"] == {"command": "mirror", "pid": proc.pid}
        # The same for a user who cannot write the mirror; verify waits for nobody: exit 3.
        other = as_nobody(["status", str(dest)])
        assert other.code == 0, other.stderr
        assert f"running: mirror (pid {proc.pid})" in other.stdout
        ver = as_nobody(["verify", str(dest)])
        assert ver.code == 3 and f"pid {proc.pid}" in ver.stderr, ver.stderr
        assert part.stat().st_size >= 200_000 and proc.poll() is None  # undisturbed
    finally:
        proc.kill()
        proc.wait()
    st = status(dest)
    assert "running:" not in st.stdout and "last run: did not finish" in st.stdout


# -- verify records what it finds ----------------------------------------------------------------


def test_verify_records_modified_and_missing_then_clears_them(
    oh_server: Any, tmp_path: Path
) -> None:
    assert mirror(oh_server, tmp_path, "-p", "102").code == 0
    edited = tmp_path / "bob_smith/102/fitbit-data.json"
    good = edited.read_bytes()
    st = edited.stat()
    edited.write_bytes(b"X" * len(good))  # same size and mtime: only a re-hash sees it
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    gone = tmp_path / "alice/102/fitbit-data.json"
    kept = gone.read_bytes()
    gone.unlink()
    ver = run_cli(None, ["verify", str(tmp_path)])
    assert ver.code == 1
    data = json.loads(status(tmp_path, "-f", "json").stdout)
    assert data["by_status"] == {"present": 2, "modified": 1, "missing": 1}
    st_after = status(tmp_path, "--max-age", "1h")
    assert st_after.code == 1 and "modified or missing" in st_after.stdout
    # Put the bytes back by hand: the next verify finds them intact and says so.
    edited.write_bytes(good)
    gone.write_bytes(kept)
    assert run_cli(None, ["verify", str(tmp_path)]).code == 0
    data = json.loads(status(tmp_path, "-f", "json").stdout)
    assert data["by_status"] == {"present": 4}
    assert status(tmp_path, "--max-age", "1h").code == 0


def test_next_mirror_downloads_what_verify_found_modified_or_missing(
    oh_server: Any, tmp_path: Path
) -> None:
    assert mirror(oh_server, tmp_path, "-p", "102").code == 0
    edited = tmp_path / "bob_smith/102/fitbit-data.json"
    good = edited.read_bytes()
    st = edited.stat()
    edited.write_bytes(b"X" * len(good))  # an edit that keeps size and mtime
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    (tmp_path / "alice/102/fitbit-data.json").unlink()
    assert run_cli(None, ["verify", str(tmp_path)]).code == 1
    res = mirror(oh_server, tmp_path, "-p", "102", "-f", "jsonl")
    assert res.code == 0, res.stderr
    by_path = {r["path"]: r["status"] for r in map(json.loads, res.stdout.splitlines())}
    assert by_path["bob_smith/102/fitbit-data.json"] == "downloaded"
    assert by_path["alice/102/fitbit-data.json"] == "downloaded"
    assert edited.read_bytes() == good
    assert run_cli(None, ["verify", str(tmp_path)]).code == 0


def test_status_names_a_running_verify(oh_server: Any, tmp_path: Path) -> None:
    assert mirror(oh_server, tmp_path, "-p", "102").code == 0
    with DestLock(tmp_path, command="verify"):
        st = status(tmp_path, "--max-age", "1h")
        res = mirror(oh_server, tmp_path, "-p", "102")
    assert st.code == 0 and f"running: verify (pid {os.getpid()})" in st.stdout
    assert "last run: ok" in st.stdout  # the mirror's run is over; only verify runs
    assert res.code == 3 and f"(verify, pid {os.getpid()})" in res.stderr
