"""Parallel ranges for big files (issues 13 and 20): several storage connections into one
partial, resumable per range across runs (also after kill -9), hashed in order, and
falling back to one stream when storage ignores Range, or starting over when the object
changed; and only when they pay: a big file starts as one stream and splits only when
that stream's measured rate says more connections would finish sooner (here: the local
server's per-connection cap), never on an uncapped link.

The cutoff and range size are shrunk through the library's Config, so a 3 MB file may
go parallel; what is checked is what a user would notice: the bytes on disk, the digests,
and the requests the local server saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ohpub.model.config import Config, RetryPolicy
from ohpub.remote.client import ApiClient as Client
from ohpub.transfer.downloader import Downloader
from ohpub.transfer.job import Downloaded
from tests.helpers import REPO, add_big_file, content_of, run_cli, storage_gets_of
from tests.ohserver import SyntheticContent

SIZE = 3_000_000
CHUNK = 256 * 1024
CFG = Config(range_cutoff=1024 * 1024, range_size=CHUNK, jobs=4)
FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05)
CAP = 1_000_000
"""Bytes/s per storage connection: one stream of SIZE takes 3 s, four about 0.8 s, so the
transfer splits (a faster link would not save enough to be worth the ranges)."""


class Cancel(Exception):
    pass


def fetch(
    server: Any,
    fid: int,
    part: Path,
    *,
    stop_after: int | None = None,
    at: tuple[int, Any] | None = None,
) -> Downloaded:
    """Download ``fid`` into ``part`` with the small-range config; ``stop_after`` cancels
    (through the progress callback, as Ctrl-C does) once that many bytes arrived; ``at``
    = (nbytes, fn) calls ``fn()`` once that many bytes arrived."""
    seen = 0

    def progress(n: int) -> None:
        nonlocal seen, at
        seen += n
        if at is not None and seen >= at[0]:
            at, fn = None, at[1]
            fn()
        if stop_after is not None and seen >= stop_after:
            raise Cancel

    try:
        with Client(server.base_url, retry=FAST) as client:
            d = Downloader(client, storage_slots=CFG.jobs, config=CFG)
            return d.to_part(client.get_file(fid), part, progress)
    finally:
        settle(server)


def settle(server: Any) -> None:
    """Wait until the server has logged every storage request (a stream the client closed
    mid-body is logged when the server notices)."""
    deadline = time.monotonic() + 10
    while server.in_flight["storage"] and time.monotonic() < deadline:
        time.sleep(0.01)


def gets_of(server: Any, fid: int, since: float = 0.0) -> list[Any]:
    """Storage GETs of ``fid`` that started at or after ``since``, in the order they started."""
    gets = [g for g in storage_gets_of(server, fid) if g.start >= since]
    return sorted(gets, key=lambda g: g.start)


def ranges_of(gets: list[Any]) -> list[tuple[int, int | None]]:
    out = []
    for g in gets:
        rng = g.headers.get("range")
        if rng:
            a, _, b = rng.split("=")[1].partition("-")
            out.append((int(a), int(b) if b else None))
    return out


def done_chunks(part: Path) -> list[int]:
    try:
        meta = json.loads(Path(str(part) + ".json").read_text())
    except (OSError, ValueError):
        return []
    return list(meta.get("done", []))


def test_a_big_file_comes_over_several_connections(oh_server: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, SIZE)
    oh_server.faults.bandwidth = CAP  # per connection: parallel ranges overlap
    d = fetch(oh_server, fid, tmp_path / "part")
    data = content_of(oh_server, fid)
    assert (tmp_path / "part").read_bytes() == data
    assert d.size == SIZE and d.md5 == oh_server.md5(fid)
    assert d.sha256 == hashlib.sha256(data).hexdigest()
    gets = gets_of(oh_server, fid)
    assert gets[0].headers.get("range") is None  # the first answer is a plain GET, kept on
    bounded = ranges_of(gets)
    assert len(bounded) >= 2 and all(b is not None for _, b in bounded)
    assert all(g.headers.get("if-range") == oh_server.etag(fid) for g in gets[1:])
    # Within the storage slots; the paced test server counts the first stream (closed by
    # the client mid-body when its next range was taken) until its pacing notices: +1.
    assert 2 <= oh_server.peak_in_flight["storage"] <= CFG.jobs + 1
    assert oh_server.count(role="download") == 1  # the signed URL is shared by every range
    assert sum(g.bytes_sent for g in gets) < 2 * SIZE
    assert len(gets) > CFG.jobs + 1 >= len({g.connection for g in gets})  # kept alive


def test_without_a_cap_a_big_file_comes_in_one_stream(oh_server: Any, tmp_path: Path) -> None:
    """Above the cutoff, but the stream is as fast as the reader can take it in: ranges
    would only add hand-offs, so the server sees one plain GET."""
    fid = add_big_file(oh_server, 40_000_000)
    d = fetch(oh_server, fid, tmp_path / "part")
    assert d.size == 40_000_000 and d.md5 == oh_server.md5(fid)
    gets = gets_of(oh_server, fid)
    assert len(gets) == 1 and gets[0].headers.get("range") is None and gets[0].status == 200


@pytest.mark.parametrize("capped", [True, False], ids=["capped", "uncapped"])
def test_the_decision_is_logged_with_verbose(
    oh_server: Any, tmp_path: Path, capped: bool
) -> None:
    """``--verbose`` says what the first stream measured and what was decided; the
    requests the server saw agree."""
    size = 12_000_000 if capped else 40_000_000
    fid = add_big_file(oh_server, size)
    oh_server.faults.bandwidth = 2_000_000 if capped else None
    args = ["-v", "fetch", str(fid), "-d", str(tmp_path), "--multi-thread-cutoff", "1M"]
    res = run_cli(oh_server, args)
    assert res.code == 0, res.stderr
    assert (tmp_path / "big.bin").read_bytes() == content_of(oh_server, fid)
    looks = [line for line in res.stderr.splitlines() if "waiting for bytes" in line]
    ranged = [g for g in storage_gets_of(oh_server, fid) if g.headers.get("range")]
    if capped:
        assert looks and looks[-1].endswith(": splitting into ranges"), res.stderr
        assert len(ranged) >= 2
    else:
        assert all(line.endswith(": one stream") for line in looks), res.stderr
        assert ranged == [] and len(storage_gets_of(oh_server, fid)) == 1


def test_a_file_of_whole_blocks_ends_with_its_last_range(oh_server: Any, tmp_path: Path) -> None:
    """The last block ends at the end of the file: once every range is in, the transfer is
    done (no extra request past the end, answered 416, to finish it over one stream)."""
    size = 12 * CHUNK
    fid = add_big_file(oh_server, size)
    oh_server.faults.bandwidth = CAP
    d = fetch(oh_server, fid, tmp_path / "part")
    assert (tmp_path / "part").read_bytes() == content_of(oh_server, fid)
    assert d.md5 == oh_server.md5(fid) and d.size == size
    gets = gets_of(oh_server, fid)
    assert len(ranges_of(gets)) >= 2
    assert [g.status for g in gets[1:]] == [206] * (len(gets) - 1)


def test_resets_in_the_middle_of_ranges_resume_within_the_range(
    oh_server: Any, tmp_path: Path
) -> None:
    fid = add_big_file(oh_server, SIZE)
    oh_server.faults.bandwidth = CAP

    def resets() -> None:  # once the ranges run: the next four GETs, whichever ranges
        oh_server.faults.reset_after[fid] = (100_000, 4)

    d = fetch(oh_server, fid, tmp_path / "part", at=(600_000, resets))
    assert (tmp_path / "part").read_bytes() == content_of(oh_server, fid)
    assert d.md5 == oh_server.md5(fid)
    gets = gets_of(oh_server, fid)
    assert sum(1 for g in gets if 0 < g.bytes_sent <= 100_000) >= 4
    bounded = [(a, b) for a, b in ranges_of(gets) if b is not None]
    assert any(a % CHUNK for a, _ in bounded)  # went on mid-range, not from its start


def test_a_storage_that_ignores_range_falls_back_to_one_stream(
    oh_server: Any, tmp_path: Path
) -> None:
    fid = add_big_file(oh_server, SIZE)
    oh_server.faults.ignore_range = True
    oh_server.faults.bandwidth = CAP
    d = fetch(oh_server, fid, tmp_path / "part")
    assert (tmp_path / "part").read_bytes() == content_of(oh_server, fid)
    assert d.md5 == oh_server.md5(fid)
    gets = gets_of(oh_server, fid)
    assert all(g.status == 200 for g in gets)
    assert any(g.headers.get("range") for g in gets)  # ranges were tried ...
    assert len(gets) <= 2 * CFG.jobs  # ... and stopped at their first 200
    assert sum(g.bytes_sent for g in gets) < 2 * SIZE + CFG.jobs * 200_000


def test_interrupted_ranges_resume_in_the_next_run_without_refetching(
    oh_server: Any, tmp_path: Path
) -> None:
    fid = add_big_file(oh_server, SIZE)
    oh_server.faults.bandwidth = 2_000_000
    part = tmp_path / "part"
    with pytest.raises(Cancel):
        fetch(oh_server, fid, part, stop_after=SIZE // 2)
    done = done_chunks(part)
    assert done and len(done) < -(-SIZE // CHUNK)
    before = time.time()
    d = fetch(oh_server, fid, part)
    assert part.read_bytes() == content_of(oh_server, fid)
    assert d.resumed and d.md5 == oh_server.md5(fid)
    later = ranges_of(gets_of(oh_server, fid, before))
    assert later and all(a // CHUNK not in done for a, _ in later)  # done ranges not fetched
    assert sum(g.bytes_sent for g in gets_of(oh_server, fid, before)) < SIZE


def test_an_object_changed_between_runs_starts_over(oh_server: Any, tmp_path: Path) -> None:
    """If-Range on the old ETag: the storage answers 200 with the new object; nothing of
    the old partial may be spliced into it."""
    fid = add_big_file(oh_server, SIZE)
    oh_server.faults.bandwidth = 2_000_000
    part = tmp_path / "part"
    old_etag = oh_server.etag(fid)
    with pytest.raises(Cancel):
        fetch(oh_server, fid, part, stop_after=SIZE // 2)
    assert done_chunks(part)
    oh_server.file(fid).content = SyntheticContent(SIZE, seed=99)  # same URL, new bytes
    oh_server.faults.bandwidth = None
    before = time.time()
    d = fetch(oh_server, fid, part)
    new = content_of(oh_server, fid)
    assert part.read_bytes() == new and d.md5 == hashlib.md5(new).hexdigest()
    assert not d.resumed
    later = gets_of(oh_server, fid, before)
    assert later[0].headers.get("if-range") == old_etag and later[0].status == 200


def test_kill_9_in_the_middle_of_ranges_then_resume(oh_server: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, SIZE)
    oh_server.faults.bandwidth = 1_000_000
    part = tmp_path / "part"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from ohpub.remote.client import ApiClient as Client\n"
        "from ohpub.model.config import Config\n"
        "from ohpub.transfer.downloader import Downloader\n"
        f"cfg = Config(range_cutoff=1048576, range_size={CHUNK}, jobs=4)\n"
        "c = Client(sys.argv[1])\n"
        "Downloader(c, storage_slots=4, config=cfg).to_part(c.get_file(int(sys.argv[2])),"
        " Path(sys.argv[3]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, oh_server.base_url, str(fid), str(part)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 30
        while len(done_chunks(part)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = done_chunks(part)
    assert 3 <= len(done) < -(-SIZE // CHUNK), done
    oh_server.faults.bandwidth = None
    before = time.time()
    d = fetch(oh_server, fid, part)
    assert part.read_bytes() == content_of(oh_server, fid)
    assert d.resumed and d.md5 == oh_server.md5(fid)
    later = ranges_of(gets_of(oh_server, fid, before))
    assert all(a // CHUNK not in done for a, _ in later)


def test_an_expired_signed_url_is_resolved_again_once_for_all_ranges(
    oh_server: Any, tmp_path: Path
) -> None:
    fid = add_big_file(oh_server, SIZE)
    oh_server.faults.bandwidth = 2_000_000
    fired = False

    def progress(n: int) -> None:
        nonlocal fired
        if not fired and n > 0:
            fired = True
            oh_server.advance(3700)  # the signed URL (and the listing's key) expire

    with Client(oh_server.base_url, retry=FAST) as client:
        d = Downloader(client, storage_slots=CFG.jobs, config=CFG)
        got = d.to_part(client.get_file(fid), tmp_path / "part", progress)
    settle(oh_server)
    assert (tmp_path / "part").read_bytes() == content_of(oh_server, fid)
    assert got.md5 == oh_server.md5(fid)
    statuses = [g.status for g in gets_of(oh_server, fid)]
    assert 403 in statuses
    assert oh_server.count(role="download") <= 4  # not one view request per range


def test_a_big_gz_is_stored_as_served_over_ranges(oh_server: Any, tmp_path: Path) -> None:
    """Content-Encoding: gzip on a .gz object: the ranges are offsets in the stored bytes."""
    fid = add_big_file(oh_server, SIZE, basename="reads.fastq.gz")
    oh_server.faults.bandwidth = CAP
    d = fetch(oh_server, fid, tmp_path / "part")
    assert (tmp_path / "part").read_bytes() == content_of(oh_server, fid)
    assert d.md5 == oh_server.md5(fid)
    assert len(ranges_of(gets_of(oh_server, fid))) >= 1


def test_multi_thread_cutoff_option_reaches_the_transfer(oh_server: Any, tmp_path: Path) -> None:
    """``--multi-thread-cutoff`` (Config.range_cutoff, built by the CLI and passed down
    through the client) decides whether a 10 MB file may come in ranges at all."""

    fid = add_big_file(oh_server, 10_000_000)
    oh_server.faults.bandwidth = 5_000_000
    one = run_cli(oh_server, ["mirror", str(tmp_path / "a"), "-p", "600"])
    assert one.code == 0, one.stderr
    assert len(storage_gets_of(oh_server, fid)) == 1  # under the 64 MiB default: one stream
    oh_server.clear_log()
    res = run_cli(
        oh_server, ["mirror", str(tmp_path / "b"), "-p", "600", "--multi-thread-cutoff", "1M"]
    )
    assert res.code == 0, res.stderr
    assert len(storage_gets_of(oh_server, fid)) > 1
    assert (tmp_path / "b/alice/600/big.bin").read_bytes() == content_of(oh_server, fid)
