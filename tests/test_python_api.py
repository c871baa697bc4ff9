"""The Python API (issue 11), through its public names only: ``import ohpub``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import ohpub

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(oh176: Any) -> Any:
    with ohpub.Client(oh176.base_url, retries=2) as c:
        yield c


def _bytes(server: Any, fid: int) -> bytes:
    return bytes(server.content(fid))


def test_files_streams_typed_records(oh176: Any, client: Any) -> None:
    files = list(ohpub.files(project=176, client=client))
    assert len(files) == 31 and len({f.id for f in files}) == 31
    f = files[0]
    assert isinstance(f, ohpub.DataFile)
    assert isinstance(f.id, int) and isinstance(f.basename, str)
    assert f.created.tzinfo is not None and f.created.utcoffset() == timezone.utc.utcoffset(None)
    assert f.project_id == 176 and f.datatype_ids == (14,)
    assert f.download_url.startswith("http") and isinstance(f.raw, dict)
    row = f.to_dict()
    for key in ("id", "basename", "created", "username", "project_id", "tags", "description"):
        assert key in row
    with pytest.raises(AttributeError):
        f.id = 1  # type: ignore[misc]  # frozen
    assert len(list(ohpub.files(project=176, limit=3, client=client))) == 3
    benc = list(ohpub.files(user="benc", client=client))
    assert benc and {f.username for f in benc} == {"benc"}


def test_default_client_comes_from_the_environment(
    oh176: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OHPUB_BASE_URL", oh176.base_url)
    assert len(list(ohpub.files(project=176))) == 31
    assert any(p["id"] == 176 for p in ohpub.projects())
    assert any(d["id"] == 14 for d in ohpub.datatypes())
    assert any(m["username"] == "benc" for m in ohpub.members())


def test_mirror_twice_from_a_str_dest(oh176: Any, client: Any, tmp_path: Path) -> None:
    dest = str(tmp_path / "m")
    seen: list[str] = []
    first = ohpub.mirror(dest, project=176, client=client, progress=lambda e: seen.append(e.kind))
    assert first.ok and first.listing_complete
    assert len(first.files) == 31
    assert {r.status for r in first.files} == {ohpub.FileStatus.DOWNLOADED}
    assert first.counts["downloaded"] == 31
    assert {"listed", "started", "bytes", "finished", "result"} <= set(seen)
    for r in first.files:
        assert r.path is not None
        data = (Path(dest) / r.path).read_bytes()
        assert (
            hashlib.sha256(data).hexdigest()
            == r.sha256
            == hashlib.sha256(_bytes(oh176, r.id or 0)).hexdigest()
        )
    second = ohpub.mirror(dest, project=176, client=client)
    assert second.ok
    assert {r.status.value for r in second.files} == {"unchanged"}
    assert second.counts["downloaded"] == 0  # counts do not add up across calls
    dry = ohpub.mirror(tmp_path / "fresh", project=176, dry_run=True, client=client)
    assert {r.status for r in dry.files} == {ohpub.FileStatus.PLANNED}
    assert not (tmp_path / "fresh").exists()


def test_mirror_failures_are_results_not_exceptions(
    oh176: Any, client: Any, tmp_path: Path
) -> None:
    fid = oh176.file_ids(public_only=True)[0]
    oh176.faults.corrupt.add(fid)
    res = ohpub.mirror(tmp_path, project=176, client=client)
    assert not res.ok
    bad = [r for r in res.files if r.status is ohpub.FileStatus.FAILED]
    assert [r.id for r in bad] == [fid] and "checksum" in (bad[0].error or "")


def test_fetch_read_bytes_and_open(oh176: Any, client: Any, tmp_path: Path) -> None:
    fid = oh176.file_ids(public_only=True)[0]
    want = _bytes(oh176, fid)
    path = ohpub.fetch(fid, tmp_path, client=client)
    assert path.parent == tmp_path and path.read_bytes() == want
    assert ohpub.fetch(fid, tmp_path, client=client) == path  # identical bytes: done
    named = ohpub.fetch(fid, tmp_path / "x.json", client=client)
    assert named == tmp_path / "x.json" and named.read_bytes() == want
    named.write_bytes(b"other")
    with pytest.raises(ohpub.UsageError):
        ohpub.fetch(fid, named, client=client)
    assert ohpub.fetch(fid, named, force=True, client=client).read_bytes() == want
    assert ohpub.read_bytes(fid, client=client) == want
    with ohpub.open(fid, client=client) as fh:
        head = fh.read(10)
        rest = fh.read()
    assert head + rest == want


def test_open_raises_integrity_error_at_the_end(oh176: Any, client: Any) -> None:
    fid = oh176.file_ids(public_only=True)[1]
    oh176.faults.corrupt.add(fid)
    with pytest.raises(ohpub.IntegrityError), ohpub.open(fid, client=client) as fh:
        while fh.read(4096):
            pass
    assert issubclass(ohpub.IntegrityError, ohpub.OhpubError)


def test_open_retries_a_storage_503_as_read_bytes_does(oh176: Any, client: Any) -> None:
    """0.3.0: ``read_bytes`` retried and succeeded, ``open`` raised UnavailableError."""
    fid = oh176.file_ids(public_only=True)[2]
    want = _bytes(oh176, fid)
    oh176.faults.script(role="storage", statuses=[503])
    with ohpub.open(fid, client=client) as fh:
        assert fh.read() == want
    oh176.faults.script(role="storage", statuses=[503])
    assert ohpub.read_bytes(fid, client=client) == want


def test_open_resumes_a_broken_connection_and_checks_the_bytes(oh_server: Any) -> None:
    from tests.helpers import add_big_file, storage_gets_of

    fid = add_big_file(oh_server, 3_000_000)
    oh_server.faults.reset_after[fid] = (1_000_000, 1)
    with ohpub.Client(oh_server.base_url) as c, ohpub.open(fid, client=c) as fh:
        got = b"".join(iter(lambda: fh.read(65536), b""))
    assert got == _bytes(oh_server, fid)
    gets = storage_gets_of(oh_server, fid)
    assert len(gets) == 2 and gets[1].headers["range"].startswith("bytes=")


def test_open_stops_the_transfer_when_the_reader_leaves_early(oh_server: Any) -> None:
    """The stream is read as it arrives (a few MiB ahead at most): leaving the ``with``
    block after the first MiB ends the transfer, it does not go on to the end unseen."""
    from tests.helpers import add_big_file, storage_gets_of

    fid = add_big_file(oh_server, 64 * 1024 * 1024)
    with ohpub.Client(oh_server.base_url) as c:
        with ohpub.open(fid, client=c) as fh:
            assert len(fh.read(1024 * 1024)) == 1024 * 1024
        deadline = time.monotonic() + 30
        while not storage_gets_of(oh_server, fid) and time.monotonic() < deadline:
            time.sleep(0.01)
    (get,) = storage_gets_of(oh_server, fid)
    assert get.bytes_sent < 32 * 1024 * 1024


def test_unknown_file_is_not_found(client: Any) -> None:
    with pytest.raises(ohpub.NotFoundError):
        ohpub.read_bytes(99_999_999, client=client)
    assert issubclass(ohpub.NotFoundError, ohpub.OhpubError)
    # Not a usage error to a library caller, and no exit codes on any exception.
    assert not issubclass(ohpub.NotFoundError, ohpub.UsageError)
    for name in ohpub.__all__:
        obj = getattr(ohpub, name)
        if isinstance(obj, type) and issubclass(obj, ohpub.OhpubError):
            assert not hasattr(obj, "exit_code"), name


def test_verify_status_index(oh176: Any, client: Any, tmp_path: Path) -> None:
    assert ohpub.mirror(tmp_path, project=176, client=client).ok
    v = ohpub.verify(tmp_path)
    assert v.ok and len(v.files) == 31 and {r.status for r in v.files} == {"ok"}
    st = ohpub.status(tmp_path)
    assert st.files == 31 and st.last_run is not None
    assert st.to_dict()["files"] == 31
    idx = ohpub.index(tmp_path)
    assert len(idx) == 31 and all(r["sha256"] for r in idx)
    victim = tmp_path / idx[0]["path"]
    victim.write_bytes(b"changed")
    v2 = ohpub.verify(tmp_path)
    assert not v2.ok and v2.counts["modified"] == 1


def test_filters_take_single_values_lists_and_dates(client: Any) -> None:
    everything = list(ohpub.files(project=[176], client=client))
    cut = sorted(f.created for f in everything)[len(everything) // 2]
    newer = list(ohpub.files(project=176, since=cut, client=client))
    assert newer and all(f.created >= cut for f in newer)
    day = cut.date().isoformat()
    upto = list(ohpub.files(project=176, until=day, client=client))
    assert all(f.created.date() <= cut.date() for f in upto)
    assert all(isinstance(f.created, datetime) for f in upto)
    with pytest.raises(ohpub.UsageError):
        list(ohpub.files(user="not a name", client=client))


def test_the_lazy_api_is_whole_and_light() -> None:
    """``import ohpub`` imports the API on first use (so the command line's signal handlers
    come first), and ``__init__.pyi``, what type checkers read, names all of it."""
    import ast

    stub = ast.parse((REPO / "ohpub" / "__init__.pyi").read_text())
    imports = [n for n in stub.body if isinstance(n, ast.ImportFrom)]
    named = {a.asname or a.name for n in imports for a in n.names}
    assert named == set(ohpub.__all__)
    assert set(ohpub.__all__) <= set(dir(ohpub))
    for name in ohpub.__all__:
        assert getattr(ohpub, name) is not None
    assert callable(ohpub.mirror)  # the function, not the subpackage of that name
    out = subprocess.run(
        [sys.executable, "-c", "import sys, ohpub; print('requests' in sys.modules)"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.stdout.strip() == "False", out.stderr


def test_a_user_script_passes_mypy_strict(tmp_path: Path) -> None:
    script = tmp_path / "notebook.py"
    script.write_text(
        "import ohpub\n"
        "from pathlib import Path\n\n"
        "def main() -> int:\n"
        "    rows = [f.to_dict() for f in ohpub.files(project=176, limit=5)]\n"
        "    names: list[str] = [f.basename for f in ohpub.files(project=176)]\n"
        "    res: ohpub.MirrorResult = ohpub.mirror(Path('spotify'), project=176, jobs=4)\n"
        "    bad = [r for r in res.files if r.status is ohpub.FileStatus.FAILED]\n"
        "    p: Path = ohpub.fetch(57602983, '.')\n"
        "    data: bytes = ohpub.read_bytes(57602983)\n"
        "    with ohpub.open(57602983) as fh:\n"
        "        head: bytes = fh.read(10)\n"
        "    try:\n"
        "        ohpub.verify('spotify')\n"
        "    except ohpub.OhpubError as exc:\n"
        "        print(exc.message)\n"
        "    with ohpub.Client(timeout=5) as c:\n"
        "        n = sum(1 for _ in ohpub.projects(client=c))\n"
        "    return len(rows) + len(names) + len(bad) + len(data) + len(head) + n + len(str(p))\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(script)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "MYPYPATH": str(REPO)},
    )
    assert res.returncode == 0, res.stdout + res.stderr
