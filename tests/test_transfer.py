"""The byte path (issue 13): bodies read straight into reusable buffers, stored exactly as
served, connections reused, a resumed partial verified, bytes before a stall kept."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from pathlib import Path
from typing import Any

from ohpub.model.config import RetryPolicy
from ohpub.model.filters import FileFilter
from ohpub.remote.client import ApiClient as Client
from ohpub.transfer.downloader import Downloader
from tests.helpers import add_big_file, content_of, storage_gets_of

FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05)


def test_gz_with_content_encoding_is_stored_as_served(oh_server: Any, tmp_path: Path) -> None:
    """File 3 is a .fastq.gz served with Content-Encoding: gzip: not a byte is decoded."""
    with Client(oh_server.base_url, retry=FAST) as client:
        d = Downloader(client).to_part(client.get_file(3), tmp_path / "part")
    data = (tmp_path / "part").read_bytes()
    assert data == content_of(oh_server, 3) and data[:2] == b"\x1f\x8b"
    assert d.size == 939_303 and d.md5 == oh_server.md5(3)
    assert storage_gets_of(oh_server, 3)[0].headers.get("accept-encoding") == "identity"


def test_storage_connections_are_reused_between_files(oh_server: Any, tmp_path: Path) -> None:
    """Reading bodies below urllib3 must still hand each finished connection back."""
    with Client(oh_server.base_url, retry=FAST) as client:
        files = list(client.iter_files(FileFilter(projects=(102,))))
        d = Downloader(client, storage_slots=1)
        for f in files:
            got = d.to_part(f, tmp_path / str(f.id))
            assert (tmp_path / str(f.id)).read_bytes() == content_of(oh_server, f.id)
            assert got.sha256 == hashlib.sha256(content_of(oh_server, f.id)).hexdigest()
    gets = [e for e in oh_server.log if e.role == "storage"]
    assert len(gets) == len(files) == 4
    assert len({e.connection for e in gets}) == 1


def test_a_partial_from_an_earlier_run_is_resumed_and_verified(
    oh_server: Any, tmp_path: Path
) -> None:
    fid = add_big_file(oh_server, 3_000_000)
    part = tmp_path / "part"
    oh_server.faults.truncate_after[fid] = (1_200_000, 1)
    with Client(oh_server.base_url, retry=RetryPolicy(attempts=1)) as client:
        try:
            Downloader(client).to_part(client.get_file(fid), part)
        except Exception as exc:  # noqa: BLE001 - the run fails, as a killed run would
            assert "mid-body" in str(exc)
    assert part.stat().st_size == 1_200_000
    with Client(oh_server.base_url, retry=FAST) as client:
        d = Downloader(client).to_part(client.get_file(fid), part)
    assert part.read_bytes() == content_of(oh_server, fid)
    assert d.resumed and d.transferred == 1_800_000
    assert d.md5 == oh_server.md5(fid)
    assert d.sha256 == hashlib.sha256(content_of(oh_server, fid)).hexdigest()
    assert storage_gets_of(oh_server, fid)[-1].headers.get("range") == "bytes=1200000-"


def test_bytes_before_a_stall_reach_the_disk(oh_server: Any, tmp_path: Path) -> None:
    """A buffer is handed on as soon as nothing more has arrived, not only when full."""
    fid = add_big_file(oh_server, 2_000_000)
    oh_server.faults.stall[fid] = (300_000, 1.5, 1)
    part = tmp_path / "part"
    seen: list[int] = []
    with Client(oh_server.base_url, retry=FAST) as client:
        f = client.get_file(fid)
        t = threading.Thread(target=lambda: Downloader(client).to_part(f, part, seen.append))
        t.start()
        deadline = time.monotonic() + 1.2
        while sum(seen) < 300_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        on_disk = part.stat().st_size if part.exists() else 0
        t.join()
    assert on_disk == 300_000  # during the stall
    assert part.read_bytes() == content_of(oh_server, fid)


def test_stream_after_a_reset_has_each_byte_once(oh_server: Any) -> None:
    fid = add_big_file(oh_server, 3_000_000)
    oh_server.faults.reset_after[fid] = (1_000_000, 1)
    out = io.BytesIO()
    with Client(oh_server.base_url, retry=FAST) as client:
        d = Downloader(client).to_stream(client.get_file(fid), out)
    assert out.getvalue() == content_of(oh_server, fid)
    assert d.md5 == oh_server.md5(fid)


def test_a_small_file_costs_one_buffer_of_its_size_and_no_thread(
    oh_server: Any, tmp_path: Path
) -> None:
    """Memory does not grow with the number of transfers in flight: a small body is hashed
    inline in one buffer of its own size (every transfer used to allocate four 1 MiB
    buffers and start a hash thread: a mirror of 600 small files peaked at 100 MB)."""
    import tracemalloc

    fid = add_big_file(oh_server, 30_000, basename="small.json")
    seen_threads: set[str] = set()

    def progress(n: int) -> None:
        seen_threads.update(t.name for t in threading.enumerate())

    with Client(oh_server.base_url, retry=FAST) as client:
        f = client.get_file(fid)
        downloader = Downloader(client)
        downloader.to_part(f, tmp_path / "warm")  # imports and pools, outside the count
        tracemalloc.start()
        try:
            d = downloader.to_part(f, tmp_path / "part", progress)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert d.size == 30_000 and (tmp_path / "part").read_bytes() == content_of(oh_server, fid)
    assert peak < 512 * 1024, peak
    assert not {n for n in seen_threads if n.startswith("ohpub-")}, seen_threads
