"""``ohpub mirror s3://bucket/prefix`` against the S3 server subprocess (tests/s3server.py)
and the local Open Humans server: the core scenarios, with the bucket's request counts."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FAST_RETRY, add_big_file, content_of, jsonl, run_cli
from tests.s3server import S3Server

REPO = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("obstore") is None:
    pytest.skip("obstore is not installed (pip install 'ohpub[s3]')", allow_module_level=True)

MiB = 1024 * 1024


def boto(s3: S3Server) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key,
                        aws_secret_access_key=s3.secret_key, region_name=s3.region)


def objects(s3: S3Server, prefix: str = "m/") -> dict[str, bytes]:
    """Every mirrored object (not ohpub's bookkeeping), key (below prefix) -> bytes."""
    c = boto(s3)
    out: dict[str, bytes] = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            rel = o["Key"][len(prefix):]
            if rel.startswith(".ohpub/") or rel == "index.jsonl":
                continue
            out[rel] = c.get_object(Bucket=s3.bucket, Key=o["Key"])["Body"].read()
    return out


def all_keys(s3: S3Server) -> list[str]:
    c = boto(s3)
    return [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket)
            for o in page.get("Contents", [])]


def uploads(s3: S3Server) -> list[Any]:
    return boto(s3).list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])


def env_of(s3: S3Server, **extra: str) -> dict[str, str]:
    return {**FAST_RETRY, **s3.env(), **extra}


def mirror(oh: Any, s3: S3Server, work: Path, *args: str, url: str | None = None,
           env: dict[str, str] | None = None) -> Any:
    url = url or f"s3://{s3.bucket}/m"
    return run_cli(oh, ["mirror", url, "--work-dir", str(work), *args],
                   env=env if env is not None else env_of(s3))


def storage_gets(oh: Any) -> int:
    return sum(1 for e in list(oh.log) if e.role == "storage" and e.method == "GET")


def expected(oh: Any, work: Path) -> dict[str, bytes]:
    """What a local tree mirror of the same server holds."""
    local = work.parent / "local-tree"
    assert run_cli(oh, ["mirror", str(local)]).code == 0
    from tests.helpers import tree

    return tree(local)


def test_seed_places_every_file_with_metadata_and_index(oh_server: Any, s3_server: S3Server,
                                                        tmp_path: Path) -> None:
    r = mirror(oh_server, s3_server, tmp_path / "work", "-f", "jsonl")
    assert r.code == 0, r.stderr
    got = objects(s3_server)
    assert got == expected(oh_server, tmp_path / "work")
    assert got
    c = boto(s3_server)
    rec = jsonl(r.stdout)[0]
    head = c.head_object(Bucket=s3_server.bucket, Key="m/" + rec["path"])
    meta = head["Metadata"]
    assert meta["ohpub-id"] == str(rec["id"])
    assert meta["ohpub-sha256"] == hashlib.sha256(got[rec["path"]]).hexdigest()
    assert meta["ohpub-md5"] == hashlib.md5(got[rec["path"]]).hexdigest()
    assert meta["ohpub-created"]
    index = c.get_object(Bucket=s3_server.bucket, Key="m/index.jsonl")["Body"].read()
    assert {json.loads(x)["path"] for x in index.splitlines()} == set(got)
    keys = all_keys(s3_server)
    assert "m/.ohpub/state.sqlite3" in keys and "m/.ohpub/lock" not in keys


def test_noop_run_costs_only_the_bookkeeping(oh_server: Any, s3_server: S3Server,
                                             tmp_path: Path) -> None:
    assert mirror(oh_server, s3_server, tmp_path / "work").code == 0
    s3_server.reset_counts()
    before = storage_gets(oh_server)
    r = mirror(oh_server, s3_server, tmp_path / "work", "-f", "jsonl")
    assert r.code == 0, r.stderr
    assert {x["status"] for x in jsonl(r.stdout)} == {"unchanged"}
    assert storage_gets(oh_server) == before  # nothing from Open Humans' storage
    ops = s3_server.ops()
    counts = s3_server.counts()
    # the lock (create; delete), the state upload, one listing page, the upload listing
    assert counts["GET"] == 0, ops
    assert counts["HEAD"] == 0, ops
    assert counts["PUT"] == 2, ops  # the lock, the state database
    assert ops["DeleteObjects"] + ops["DeleteObject"] == 1, ops  # the lock
    assert counts["LIST"] <= 3, ops  # the check, the prefix listing, multipart uploads


def test_upstream_change_and_delete(oh_server: Any, s3_server: S3Server, tmp_path: Path) -> None:
    work = tmp_path / "work"
    assert mirror(oh_server, s3_server, work).code == 0
    before = objects(s3_server)
    victim = sorted(before)[0]
    rec = next(r for r in run_index(s3_server) if r["path"] == victim)
    oh_server.delete_file(rec["id"])
    r = mirror(oh_server, s3_server, work, "--delete", "-f", "jsonl")
    assert r.code == 0, r.stderr
    assert any(x["status"] == "deleted" and x["path"] == victim for x in jsonl(r.stdout))
    after = objects(s3_server)
    assert victim not in after and len(after) == len(before) - 1


def run_index(s3: S3Server) -> list[dict[str, Any]]:
    body = boto(s3).get_object(Bucket=s3.bucket, Key="m/index.jsonl")["Body"].read()
    return [json.loads(x) for x in body.splitlines()]


def test_lock_held_by_another_run_exits_3(oh_server: Any, s3_server: S3Server,
                                          tmp_path: Path) -> None:
    body = json.dumps({"run": "x", "host": "elsewhere", "pid": 1, "command": "mirror",
                       "expires": time.time() + 3600}).encode()
    boto(s3_server).put_object(Bucket=s3_server.bucket, Key="m/.ohpub/lock", Body=body)
    s3_server.reset_counts()
    r = mirror(oh_server, s3_server, tmp_path / "work")
    assert r.code == 3, r.stderr
    assert "locked" in r.stderr and "elsewhere" in r.stderr
    assert objects(s3_server) == {}
    assert s3_server.counts()["PUT"] == 1  # the refused conditional create, nothing else


def test_expired_lock_is_taken_over(oh_server: Any, s3_server: S3Server, tmp_path: Path) -> None:
    body = json.dumps({"run": "x", "host": "elsewhere", "pid": 1, "command": "mirror",
                       "expires": time.time() - 1}).encode()
    boto(s3_server).put_object(Bucket=s3_server.bucket, Key="m/.ohpub/lock", Body=body)
    assert mirror(oh_server, s3_server, tmp_path / "work").code == 0
    assert "m/.ohpub/lock" not in all_keys(s3_server)


def test_bucket_that_does_not_exist(oh_server: Any, s3_server: S3Server, tmp_path: Path) -> None:
    work = tmp_path / "work"
    r = mirror(oh_server, s3_server, work, url="s3://no-such-bucket-here/m")
    assert r.code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "bucket does not exist" in lines[0], r.stderr
    assert not work.exists()
    assert storage_gets(oh_server) == 0


@pytest.mark.parametrize("bad", ["key", "secret"])
def test_wrong_credentials(oh_server: Any, s3_server: S3Server, tmp_path: Path,
                           bad: str) -> None:
    env = env_of(s3_server)
    if bad == "key":
        env["AWS_ACCESS_KEY_ID"] = "AKIAWRONGWRONGWRONG0"
    else:
        env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret"
    work = tmp_path / "work"
    r = mirror(oh_server, s3_server, work, env=env)
    assert r.code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ohpub: error:"), r.stderr
    assert ("access key id" if bad == "key" else "secret access key") in lines[0]
    assert all_keys(s3_server) == [] and not work.exists()


def test_without_the_extra_one_line_exit_2(oh_server: Any, tmp_path: Path) -> None:
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            "    if name.startswith('obstore'): raise ImportError(name)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\n"
            "from ohpub.cli.main import main\n"
            "sys.argv = ['ohpub', 'mirror', 's3://b/p', '--work-dir', sys.argv[1]]\n"
            "main()\n")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w")], cwd=REPO,
                       capture_output=True, text=True,
                       env={**os.environ, "OHPUB_BASE_URL": oh_server.base_url})
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "ohpub: error: an s3:// DEST needs the object-store extra: pip install 'ohpub[s3]'"]


def test_big_file_multipart_and_kill_9_during_upload_then_resume(
        oh_server: Any, s3_server: S3Server, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, 40 * MiB)
    work = tmp_path / "work"
    env = {**os.environ, **env_of(s3_server), "OHPUB_BASE_URL": oh_server.base_url,
           "OHPUB_S3_MULTIPART_THRESHOLD": str(6 * MiB), "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ohpub", "mirror", f"s3://{s3_server.bucket}/m",
                             "--work-dir", str(work), "--project", "600"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while s3_server.ops()["UploadPart"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert s3_server.ops()["CreateMultipartUpload"] == 1
    assert "m/alice/600/big.bin" not in all_keys(s3_server)  # never a partial object
    left = uploads(s3_server)
    r = mirror(oh_server, s3_server, work, "--project", "600",
               env=env_of(s3_server, OHPUB_S3_MULTIPART_THRESHOLD=str(6 * MiB)))
    assert r.code == 0, r.stderr
    assert uploads(s3_server) == []  # the killed run's upload aborted (it had {left})
    assert s3_server.ops()["AbortMultipartUpload"] == len(left)
    assert objects(s3_server)["alice/600/big.bin"] == content_of(oh_server, fid)
    head = boto(s3_server).head_object(Bucket=s3_server.bucket, Key="m/alice/600/big.bin")
    assert head["ETag"].strip('"').endswith("-7")  # 40 MiB in 6 MiB parts: multipart
    want = hashlib.sha256(content_of(oh_server, fid)).hexdigest()
    assert head["Metadata"]["ohpub-sha256"] == want


def _until(cond: Any, what: str, seconds: float = 120) -> None:
    """Wait for ``cond()`` (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_ctrl_c_while_uploads_are_in_flight_exits_130_and_releases_the_lock(
        oh_server: Any, s3_server: S3Server, tmp_path: Path) -> None:
    """The server holds every PUT of a mirrored file for 10 minutes; SIGINT once one is in
    flight. The run exits 130 without waiting for them (the old upload pool, a
    ThreadPoolExecutor waited on outside the cancel token, held it for the whole batch:
    the ``communicate`` timeout caught that), its lock object is gone, and no object but a
    complete one is ever at a final key: the next run completes the mirror."""
    work = tmp_path / "work"
    held = r"/m/(?!\.ohpub/|index\.jsonl$)"  # the files, not the lock, state or index
    env = {**os.environ, **env_of(s3_server), "OHPUB_BASE_URL": oh_server.base_url,
           "NO_COLOR": "1"}
    s3_server.delay("PutObject", 600, path=held)
    proc = subprocess.Popen([sys.executable, "-m", "ohpub", "mirror", f"s3://{s3_server.bucket}/m",
                             "--work-dir", str(work)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def in_flight() -> list[dict[str, Any]]:
        return [q for q in s3_server.requests()
                if q["op"] == "PutObject" and re.search(held, q["path"])]

    try:
        _until(lambda: in_flight() or proc.poll() is not None, "an upload in flight")
        assert proc.poll() is None, "the run ended before any upload"
        proc.send_signal(signal.SIGINT)
        _out, err_bytes = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        s3_server.clear_delays()
    err = err_bytes.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("ohpub: interrupted"), err
    assert "m/.ohpub/lock" not in all_keys(s3_server)
    _until(lambda: all(q["status"] is not None for q in in_flight()), "the held PUTs to end")
    want = expected(oh_server, work)
    got = objects(s3_server)
    assert {k: v for k, v in got.items() if want.get(k) != v} == {}  # only complete objects
    r = mirror(oh_server, s3_server, work)
    assert r.code == 0, r.stderr
    assert objects(s3_server) == want


def test_a_run_longer_than_its_lease_keeps_the_lock(oh_server: Any, s3_server: S3Server,
                                                    tmp_path: Path) -> None:
    """A lease of 4 s (``OHPUB_S3_LEASE``), renewed every third of it, and a run held past
    it (the server holds its uploads): the lock object's lease moves on, and a second run
    from another work directory started after the first lease ran out is refused (exit 3)
    instead of taking the lock over. Without the renewal it would take it over."""
    held = r"/m/(?!\.ohpub/|index\.jsonl$)"
    env = {**os.environ, **env_of(s3_server), "OHPUB_BASE_URL": oh_server.base_url,
           "NO_COLOR": "1", "OHPUB_S3_LEASE": "4"}
    url = f"s3://{s3_server.bucket}/m"
    lock_key = "m/.ohpub/lock"
    c = boto(s3_server)

    def lock() -> dict[str, Any]:
        body: dict[str, Any] = json.loads(c.get_object(Bucket=s3_server.bucket,
                                                       Key=lock_key)["Body"].read())
        return body

    s3_server.delay("PutObject", 600, path=held)
    first = subprocess.Popen([sys.executable, "-m", "ohpub", "mirror", url, "--work-dir",
                              str(tmp_path / "work1")], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _until(lambda: first.poll() is not None or any(
            q["op"] == "PutObject" and re.search(held, q["path"])
            for q in s3_server.requests()), "the first run's uploads")
        assert first.poll() is None, "the first run ended before its uploads"
        taken = lock()
        _until(lambda: time.time() > taken["expires"] + 1, "the first lease to run out")
        renewed = lock()
        assert renewed["run"] == taken["run"] and renewed["expires"] > taken["expires"]
        try:
            second = subprocess.run([sys.executable, "-m", "ohpub", "mirror", url, "--work-dir",
                                     str(tmp_path / "work2")], cwd=REPO, env=env,
                                    capture_output=True, text=True, timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("the second run took the lock over and waited on its uploads")
        assert second.returncode == 3, second.stderr
        assert "locked by another run" in second.stderr
        assert lock()["run"] == taken["run"]
    finally:
        s3_server.clear_delays()
        try:
            _out, err = first.communicate(timeout=120)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    assert first.returncode == 0, err.decode()
    assert lock_key not in all_keys(s3_server)


def test_fresh_work_dir_downloads_nothing(oh_server: Any, s3_server: S3Server,
                                          tmp_path: Path) -> None:
    assert mirror(oh_server, s3_server, tmp_path / "work1").code == 0
    before = storage_gets(oh_server)
    r = mirror(oh_server, s3_server, tmp_path / "work2", "-f", "jsonl")
    assert r.code == 0, r.stderr
    assert {x["status"] for x in jsonl(r.stdout)} == {"unchanged"}
    assert storage_gets(oh_server) == before


def test_fresh_work_dir_without_the_state_object_adopts_from_metadata(
        oh_server: Any, s3_server: S3Server, tmp_path: Path) -> None:
    assert mirror(oh_server, s3_server, tmp_path / "work1").code == 0
    n = len(objects(s3_server))
    boto(s3_server).delete_object(Bucket=s3_server.bucket, Key="m/.ohpub/state.sqlite3")
    before = storage_gets(oh_server)
    s3_server.reset_counts()
    r = mirror(oh_server, s3_server, tmp_path / "work2", "-f", "jsonl")
    assert r.code == 0, r.stderr
    assert {x["status"] for x in jsonl(r.stdout)} == {"unchanged"}
    assert storage_gets(oh_server) == before
    assert s3_server.counts()["HEAD"] == n  # one HEAD per object, no GET of a body
    assert s3_server.ops()["GetObject"] == 0


def test_verify_finds_modified_missing_untracked_and_mirror_repairs(
        oh_server: Any, s3_server: S3Server, tmp_path: Path) -> None:
    work = tmp_path / "work"
    assert mirror(oh_server, s3_server, work).code == 0
    good = objects(s3_server)
    modified, missing = sorted(good)[:2]
    c = boto(s3_server)
    c.put_object(Bucket=s3_server.bucket, Key="m/" + modified, Body=b"tampered")
    c.delete_object(Bucket=s3_server.bucket, Key="m/" + missing)
    c.put_object(Bucket=s3_server.bucket, Key="m/stray.txt", Body=b"x")
    env = env_of(s3_server, XDG_CACHE_HOME=str(tmp_path / "cache"))
    s3_server.reset_counts()
    r = run_cli(oh_server, ["verify", f"s3://{s3_server.bucket}/m", "-f", "jsonl"], env=env)
    assert r.code == 1, r.stderr
    by = {x["path"]: x["status"] for x in jsonl(r.stdout)}
    assert by[modified] == "modified" and by[missing] == "missing"
    assert by["stray.txt"] == "untracked"
    assert [p for p, s in by.items() if s == "ok"] == sorted(set(good) - {modified, missing})
    assert s3_server.ops()["GetObject"] >= len(good) - 1  # a full read of every object
    st = run_cli(oh_server, ["status", f"s3://{s3_server.bucket}/m", "-f", "json"], env=env)
    assert st.code == 0, st.stderr
    assert json.loads(st.stdout)["by_status"].get("modified") == 1
    r = mirror(oh_server, s3_server, work, "-f", "jsonl")
    assert r.code == 0, r.stderr
    done = {x["path"]: x["status"] for x in jsonl(r.stdout)}
    assert done[modified] == "downloaded" and done[missing] == "downloaded"
    after = objects(s3_server)
    assert {k: v for k, v in after.items() if k != "stray.txt"} == good


def test_status_reads_no_object_body(oh_server: Any, s3_server: S3Server,
                                     tmp_path: Path) -> None:
    assert mirror(oh_server, s3_server, tmp_path / "work").code == 0
    s3_server.reset_counts()
    env = env_of(s3_server, XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = run_cli(oh_server, ["status", f"s3://{s3_server.bucket}/m", "-f", "json"], env=env)
    assert r.code == 0, r.stderr
    gets = [q for q in s3_server.requests() if q.get("op") == "GetObject"]
    st = json.loads(r.stdout)
    assert st["files"] == len(objects(s3_server)) and st["last_run"]["outcome"] == "ok"
    own = (".ohpub/state.sqlite3", ".ohpub/lock")
    assert gets and all(q["path"].endswith(own) for q in gets), gets


def test_library_index_of_a_bucket(oh_server: Any, s3_server: S3Server, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import ohpub

    assert mirror(oh_server, s3_server, tmp_path / "work").code == 0
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    recs = ohpub.index(f"s3://{s3_server.bucket}/m")
    assert {r["path"] for r in recs} == set(objects(s3_server))
