"""`ohpub mirror`, `fetch`, `verify`, `status` against the local Open Humans server."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ohpub.local.lock import DestLock
from ohpub.remote.client import ApiClient as Client
from ohpub.transfer.downloader import Downloader
from tests.helpers import add_big_file, content_of, jsonl, run_cli, start_mirror, tree

REPO = Path(__file__).resolve().parent.parent


def storage_gets(server: Any, since: float = 0.0) -> list[Any]:
    """Storage GETs the server saw (entries are logged when a request ends, so a killed
    client's request can land late: ``since`` filters on when a request started)."""
    return [e for e in server.log if e.role == "storage" and e.method == "GET" and e.start >= since]


# -- the real project-176 listing -------------------------------------------------------------


def test_project_176_mirrors_to_31_distinct_correct_files(oh176: Any, tmp_path: Path) -> None:
    dest = tmp_path / "m"
    res = run_cli(oh176, ["mirror", str(dest), "--project", "176", "--format", "jsonl"])
    assert res.code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert len(recs) == 31 and {r["status"] for r in recs} == {"downloaded"}
    files = tree(dest)
    assert len(files) == 31
    by_id = {r["id"]: r for r in recs}
    for fid, rec in by_id.items():
        data = (dest / rec["path"]).read_bytes()
        assert data == content_of(oh176, fid)
        assert rec["sha256"] == hashlib.sha256(data).hexdigest()
    # The naming rule: rssfed23's four archives, the newest plain, the others with their id.
    rss = sorted(p for p in files if p.startswith("rssfed23/176/spotify-listening-archive"))
    assert len(rss) == 4
    assert "rssfed23/176/spotify-listening-archive.json" in rss
    assert by_id[57588874]["path"] == "rssfed23/176/spotify-listening-archive.57588874.json"
    index = jsonl((dest / "index.jsonl").read_text())
    assert len(index) == 31
    assert all("download_url" not in r for r in index)
    assert "files: 31 downloaded" in res.stderr or "31 files: 31 downloaded" in res.stderr

    oh176.clear_log()
    again = run_cli(oh176, ["mirror", str(dest), "--project", "176", "--format", "jsonl"])
    assert again.code == 0, again.stderr
    assert {r["status"] for r in jsonl(again.stdout)} == {"unchanged"}
    assert storage_gets(oh176) == []
    assert oh176.count(role="download") == 0
    assert "31 unchanged" in again.stderr


def test_gz_bytes_are_stored_as_served(oh_server: Any, tmp_path: Path) -> None:
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "128"])
    assert res.code == 0, res.stderr
    data = (tmp_path / "alice/128/ag-000001.fastq.gz").read_bytes()
    assert data == content_of(oh_server, 3)
    assert data[:2] == b"\x1f\x8b"


def test_hidden_member_goes_under_hidden_members(oh_server: Any, tmp_path: Path) -> None:
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"])
    assert res.code == 0, res.stderr
    assert sorted(tree(tmp_path)) == [
        "alice/102/fitbit-data.1.json",
        "alice/102/fitbit-data.json",
        "bob_smith/102/fitbit-data.json",
        "hidden-members/102/fitbit-data.json",
    ]
    assert (tmp_path / "alice/102/fitbit-data.json").read_bytes() == content_of(oh_server, 2)


def test_replaced_file_takes_the_plain_name_old_one_renamed(oh_server: Any, tmp_path: Path) -> None:
    dest = tmp_path / "inc"
    assert run_cli(oh_server, ["mirror", str(dest), "-p", "102"]).code == 0
    new_id = oh_server.add_file(
        basename="fitbit-data.json",
        content=b'{"new": true}',
        project_id=102,
        username="alice",
        created=datetime(2025, 1, 1, tzinfo=timezone.utc),
    )
    oh_server.clear_log()
    res = run_cli(oh_server, ["mirror", str(dest), "-p", "102", "--format", "jsonl"])
    assert res.code == 0, res.stderr
    recs = {r["id"]: r for r in jsonl(res.stdout)}
    assert recs[new_id]["status"] == "downloaded"
    assert recs[new_id]["path"] == "alice/102/fitbit-data.json"
    assert recs[2]["status"] == "renamed"
    assert recs[2]["path"] == "alice/102/fitbit-data.2.json"
    # Only the new file was downloaded.
    assert [e.path for e in oh_server.log if e.role == "download"] == [
        f"/data-management/datafile-download/{new_id}/"
    ]
    assert (dest / "alice/102/fitbit-data.2.json").read_bytes() == content_of(oh_server, 2)
    fresh = tmp_path / "fresh"
    assert run_cli(oh_server, ["mirror", str(fresh), "-p", "102"]).code == 0
    assert tree(fresh) == tree(dest)


# -- resume, interruption, locking --------------------------------------------------------


def _wait_for_partial(dest: Path, file_id: int, at_least: int, timeout: float = 30) -> int:
    part = dest / ".ohpub" / "partial" / str(file_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if part.exists() and part.stat().st_size >= at_least:
            return part.stat().st_size
        time.sleep(0.02)
    raise AssertionError("the download never got going")


def test_kill_9_mid_download_resumes_with_range(oh_server: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, 8_000_000)
    oh_server.faults.bandwidth = 2_000_000
    proc = start_mirror(oh_server, tmp_path, "-p", "600")
    try:
        got = _wait_for_partial(tmp_path, fid, 1_000_000)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "alice/600/big.bin").exists()  # never a partial at the final path
    oh_server.faults.bandwidth = None
    t0 = time.time()
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "600", "--format", "jsonl"])
    assert res.code == 0, res.stderr
    assert jsonl(res.stdout)[0]["status"] == "resumed"
    ranges = [e.headers.get("range") for e in storage_gets(oh_server, t0)]
    assert len(ranges) == 1 and ranges[0] is not None
    start = int(ranges[0].split("=")[1].rstrip("-"))
    assert start >= got
    assert [e.headers.get("if-range") for e in storage_gets(oh_server, t0)][0]
    data = (tmp_path / "alice/600/big.bin").read_bytes()
    assert hashlib.md5(data).hexdigest() == hashlib.md5(content_of(oh_server, fid)).hexdigest()
    assert not (tmp_path / ".ohpub/partial" / str(fid)).exists()


def test_ctrl_c_exits_130_and_rerun_completes(oh_server: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, 6_000_000)
    oh_server.faults.bandwidth = 2_000_000
    proc = start_mirror(oh_server, tmp_path, "-p", "600")
    _wait_for_partial(tmp_path, fid, 500_000)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert (tmp_path / ".ohpub/partial" / str(fid)).stat().st_size > 0  # kept for resume
    oh_server.faults.bandwidth = None
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "600", "--format", "jsonl"])
    assert res.code == 0, res.stderr
    assert jsonl(res.stdout)[0]["status"] == "resumed"
    assert (tmp_path / "alice/600/big.bin").read_bytes() == content_of(oh_server, fid)


def test_second_mirror_on_locked_dest_exits_3(oh_server: Any, tmp_path: Path) -> None:
    (tmp_path / ".ohpub").mkdir()
    with DestLock(tmp_path):
        res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"])
    assert res.code == 3
    assert "locked" in res.stderr and res.stderr.startswith("ohpub: error:")
    assert oh_server.count() == 0


def test_locked_dest_from_another_process(oh_server: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, 4_000_000)
    oh_server.faults.bandwidth = 1_000_000
    proc = start_mirror(oh_server, tmp_path, "-p", "600")
    try:
        _wait_for_partial(tmp_path, fid, 100_000)
        res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "600"])
        assert res.code == 3
    finally:
        proc.kill()
        proc.wait()
    oh_server.faults.bandwidth = None
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "600"]).code == 0


# -- keys, unavailable files, deletions ---------------------------------------------------------


def test_expired_key_is_reminted(oh_server: Any, tmp_path: Path) -> None:
    client = Client(oh_server.base_url)
    f = client.get_file(1)
    oh_server.advance(3700)  # the key is now older than an hour
    d = Downloader(client).to_part(f, tmp_path / "part")
    assert (tmp_path / "part").read_bytes() == content_of(oh_server, 1)
    assert d.size == len(content_of(oh_server, 1))
    details = [e for e in oh_server.log if e.path == "/api/public/datafile/1/"]
    assert len(details) == 2  # the listing and the re-mint
    assert [e.status for e in oh_server.log if e.role == "download"][0] == 403


def test_old_listing_is_reminted_before_use(oh_server: Any, tmp_path: Path) -> None:
    client = Client(oh_server.base_url)
    f = client.get_file(1)
    from dataclasses import replace

    stale = replace(f, listed_at=f.listed_at - 3300)
    Downloader(client).to_part(stale, tmp_path / "part")
    downloads = [e.status for e in oh_server.log if e.role == "download"]
    assert downloads == [302]  # no 403 first: the key was refreshed just in time


def test_unavailable_file_does_not_stop_the_mirror(oh_server: Any, tmp_path: Path) -> None:
    oh_server.storage_missing.add(5)
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "128", "--format", "jsonl"])
    assert res.code == 0, res.stderr
    recs = {r["id"]: r for r in jsonl(res.stdout)}
    assert recs[5]["status"] == "unavailable" and recs[3]["status"] == "downloaded"
    strict = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "128", "--strict"])
    assert strict.code == 1


def test_removed_upstream_is_kept_then_deleted_with_delete(oh_server: Any, tmp_path: Path) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    oh_server.delete_file(4)
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102", "--format", "jsonl"])
    recs = {r["id"]: r for r in jsonl(res.stdout)}
    assert res.code == 0
    assert recs[4]["status"] == "removed-upstream"
    assert (tmp_path / "bob_smith/102/fitbit-data.json").exists()
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102", "--delete", "-f", "jsonl"])
    recs = {r["id"]: r for r in jsonl(res.stdout)}
    assert recs[4]["status"] == "deleted"
    assert not (tmp_path / "bob_smith/102/fitbit-data.json").exists()
    assert not (tmp_path / "bob_smith").exists()  # empty directories pruned


def test_delete_refused_after_failed_listing(oh_server: Any, tmp_path: Path) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    oh_server.faults.listing_mode = "html"
    res = run_cli(oh_server, ["--retries", "1", "mirror", str(tmp_path), "-p", "102", "--delete"])
    assert res.code == 1
    assert len(tree(tmp_path)) == 4


def test_max_size_skips_large_files(oh_server: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, 3_000_000)
    res = run_cli(
        oh_server, ["mirror", str(tmp_path), "-p", "600", "--max-size", "1M", "-f", "jsonl"]
    )
    assert res.code == 0, res.stderr
    rec = jsonl(res.stdout)[0]
    assert rec["id"] == fid and rec["status"] == "skipped" and rec["bytes"] == 3_000_000
    assert tree(tmp_path) == {}


def test_dry_run_writes_nothing(oh_server: Any, tmp_path: Path) -> None:
    dest = tmp_path / "plan"
    dest.mkdir()
    res = run_cli(oh_server, ["mirror", str(dest), "-p", "102", "--dry-run", "-f", "jsonl"])
    assert res.code == 0, res.stderr
    *recs, totals = jsonl(res.stdout)
    assert {r["status"] for r in recs} == {"planned"}
    total = sum(len(content_of(oh_server, i)) for i in (1, 2, 4, 6))
    assert sum(r["bytes"] for r in recs) == total
    assert totals["status"] == "totals" and totals["download"] == {"files": 4, "bytes": total}
    assert list(dest.iterdir()) == []
    assert "dry run: 4 files: 4 to download" in res.stderr
    assert storage_gets(oh_server) and all(
        e.headers.get("range") == "bytes=0-0" for e in storage_gets(oh_server)
    )


def test_dest_problems_are_usage_errors(oh_server: Any, tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    res = run_cli(oh_server, ["mirror", str(afile), "-p", "102"])
    assert res.code == 2 and "not a directory" in res.stderr
    res = run_cli(oh_server, ["mirror", str(tmp_path / "no/such/parent"), "-p", "102"])
    assert res.code == 2 and "does not exist" in res.stderr


# -- verify, status, fetch -----------------------------------------------------------------


def test_verify_finds_flipped_byte_and_deleted_file(oh_server: Any, tmp_path: Path) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    ok = run_cli(oh_server, ["verify", str(tmp_path), "-f", "jsonl"])
    assert ok.code == 0 and {r["status"] for r in jsonl(ok.stdout)} == {"ok"}
    victim = tmp_path / "alice/102/fitbit-data.json"
    data = bytearray(victim.read_bytes())
    data[0] ^= 0x01
    st = victim.stat()
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: still caught
    (tmp_path / "bob_smith/102/fitbit-data.json").unlink()
    (tmp_path / "alice/102/notes.txt").write_text("mine")
    res = run_cli(oh_server, ["verify", str(tmp_path), "-f", "jsonl"])
    assert res.code == 1
    by_path = {r["path"]: r["status"] for r in jsonl(res.stdout)}
    assert by_path["alice/102/fitbit-data.json"] == "modified"
    assert by_path["bob_smith/102/fitbit-data.json"] == "missing"
    assert by_path["alice/102/notes.txt"] == "untracked"
    assert by_path["alice/102/fitbit-data.1.json"] == "ok"


def test_modified_file_is_downloaded_again(oh_server: Any, tmp_path: Path) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "128"]).code == 0
    (tmp_path / "bob_smith/128/taxonomy-summary.tsv").write_bytes(b"tampered")
    oh_server.clear_log()
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "128", "-f", "jsonl"])
    recs = {r["id"]: r["status"] for r in jsonl(res.stdout)}
    assert recs == {3: "unchanged", 5: "downloaded"}
    assert (tmp_path / "bob_smith/128/taxonomy-summary.tsv").read_bytes() == content_of(
        oh_server, 5
    )


def test_status_reports_and_max_age(oh_server: Any, tmp_path: Path) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    res = run_cli(oh_server, ["status", str(tmp_path), "--format", "json"])
    st = json.loads(res.stdout)
    assert res.code == 0 and st["files"] == 4
    assert st["by_project"]["102"]["files"] == 4
    assert st["last_complete_run"]["outcome"] == "ok"
    assert run_cli(oh_server, ["status", str(tmp_path), "--max-age", "1h"]).code == 0
    time.sleep(1.1)
    assert run_cli(oh_server, ["status", str(tmp_path), "--max-age", "1s"]).code == 1
    res = run_cli(oh_server, ["status", str(tmp_path / "nope")])
    assert res.code == 2


def test_fetch_to_stdout(oh_server: Any) -> None:
    res = run_cli(oh_server, ["fetch", "3", "-o", "-"])
    assert res.code == 0, res.stderr
    assert res.stdout_bytes == content_of(oh_server, 3)


def test_fetch_to_dir_refuses_to_overwrite_without_force(oh_server: Any, tmp_path: Path) -> None:
    res = run_cli(oh_server, ["fetch", "1", "2", "-d", str(tmp_path)])
    assert res.code == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fitbit-data.1.json", "fitbit-data.json"]
    again = run_cli(oh_server, ["fetch", "2", "-d", str(tmp_path)])
    assert again.code == 0 and "unchanged" in again.stderr
    (tmp_path / "fitbit-data.json").write_text("something else")
    refused = run_cli(oh_server, ["fetch", "2", "-d", str(tmp_path)])
    assert refused.code == 1 and "--force" in refused.stderr
    assert (tmp_path / "fitbit-data.json").read_text() == "something else"
    forced = run_cli(oh_server, ["fetch", "2", "-d", str(tmp_path), "--force"])
    assert forced.code == 0
    assert (tmp_path / "fitbit-data.json").read_bytes() == content_of(oh_server, 2)


def test_fetch_unknown_id(oh_server: Any, tmp_path: Path) -> None:
    res = run_cli(oh_server, ["fetch", "99999", "-d", str(tmp_path)])
    assert res.code == 2 and "file 99999 not found" in res.stderr


# -- politeness and overlap ---------------------------------------------------------------------


def test_open_humans_sees_at_most_4_requests_while_storage_runs_wider(
    oh_server: Any, tmp_path: Path
) -> None:
    oh_server.generate(60, 6, min_size=1000, max_size=3000, project_id=700, seed=5)
    oh_server.faults.latency.update({"api": 0.02, "download": 0.05, "storage": 0.1})
    res = run_cli(
        oh_server,
        ["mirror", str(tmp_path), "-p", "700", "--jobs", "12"],
        env={"OHPUB_PAGE_SIZE": "20"},
    )
    assert res.code == 0, res.stderr
    assert len(tree(tmp_path)) == 60
    assert oh_server.peak_in_flight["site"] <= 4
    assert oh_server.peak_in_flight["storage"] > 4


def test_downloads_start_while_listing_continues(oh_server: Any, tmp_path: Path) -> None:
    oh_server.generate(30, 3, min_size=1000, max_size=2000, project_id=700, seed=6)
    oh_server.faults.latency["api"] = 0.1
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "700"], env={"OHPUB_PAGE_SIZE": "5"})
    assert res.code == 0, res.stderr
    pages = [e for e in oh_server.log if e.path == "/api/public/project/700/datafiles/"]
    first_storage = min(e.start for e in oh_server.log if e.role == "storage")
    assert first_storage < max(e.start for e in pages)


def test_connection_reset_mid_body_resumes_within_the_run(oh_server: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, 3_000_000)
    oh_server.faults.reset_after[fid] = (1_000_000, 2)
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "600", "-f", "jsonl"])
    assert res.code == 0, res.stderr
    assert (tmp_path / "alice/600/big.bin").read_bytes() == content_of(oh_server, fid)
    ranges = [e.headers.get("range") for e in storage_gets(oh_server)]
    assert ranges[0] is None and all(r and r.startswith("bytes=") for r in ranges[1:])
    assert len(ranges) == 3


def test_touched_but_identical_file_is_rehashed_not_downloaded(
    oh_server: Any, tmp_path: Path
) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "128"]).code == 0
    os.utime(tmp_path / "alice/128/ag-000001.fastq.gz", (1, 1))
    oh_server.clear_log()
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "128", "-f", "jsonl"])
    assert {r["status"] for r in jsonl(res.stdout)} == {"unchanged"}
    assert storage_gets(oh_server) == []
    oh_server.clear_log()
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "128", "-f", "jsonl"])
    assert storage_gets(oh_server) == []


def test_missing_file_whose_old_name_now_belongs_to_another_file(
    oh_server: Any, tmp_path: Path
) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    (tmp_path / "alice/102/fitbit-data.json").unlink()  # file 2, deleted by the user
    new_id = oh_server.add_file(
        basename="fitbit-data.json",
        content=b"newest",
        project_id=102,
        username="alice",
        created=datetime(2025, 1, 1, tzinfo=timezone.utc),
    )
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102", "-f", "jsonl"])
    assert res.code == 0, res.stderr
    files = tree(tmp_path)
    assert files["alice/102/fitbit-data.json"] == b"newest"
    assert files["alice/102/fitbit-data.2.json"] == content_of(oh_server, 2)
    assert files["alice/102/fitbit-data.1.json"] == content_of(oh_server, 1)
    assert {r["id"]: r["status"] for r in jsonl(res.stdout)}[new_id] == "downloaded"
    assert run_cli(oh_server, ["verify", str(tmp_path)]).code == 0


def test_index_is_rewritten_only_when_something_changed(oh_server: Any, tmp_path: Path) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    index = tmp_path / "index.jsonl"
    before = index.stat().st_mtime_ns
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    assert index.stat().st_mtime_ns == before
    oh_server.delete_file(4)
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    statuses = {r["id"]: r["status"] for r in jsonl(index.read_text())}
    assert statuses[4] == "removed-upstream" and statuses[1] == "present"
