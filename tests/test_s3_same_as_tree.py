"""An ``s3://`` DEST behaves exactly as a local tree: the dry run's plan, renames of
repeated basenames (copy + delete, metadata kept), removed-upstream marking. Each test runs
the same steps against a tree and a bucket and compares what a user sees."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.helpers import content_of, jsonl, run_cli, tree
from tests.s3server import S3Server
from tests.test_s3_mirror import all_keys, boto, mirror, objects, run_index

URL = "s3://{}/m"


def both(oh: Any, s3: S3Server, tmp: Path, *args: str) -> tuple[Any, Any]:
    """The same mirror command into a tree and into the bucket."""
    local = run_cli(oh, ["mirror", str(tmp / "tree"), *args])
    remote = mirror(oh, s3, tmp / "work", *args)
    assert local.code == remote.code == 0, (local.stderr, remote.stderr)
    return local, remote


def records(res: Any) -> list[tuple[Any, ...]]:
    return sorted((r["id"], r["path"], r["status"], r["bytes"]) for r in jsonl(res.stdout)
                  if "id" in r)


def state_rows(work: Path) -> dict[int, tuple[str | None, str]]:
    db = sqlite3.connect(work / ".ohpub" / "state.sqlite3")
    try:
        return {int(i): (p, s) for i, p, s in db.execute("SELECT id, path, status FROM files")}
    finally:
        db.close()


def test_dry_run_plans_against_the_bucket_and_writes_nothing(
        oh_server: Any, s3_server: S3Server, tmp_path: Path) -> None:
    both(oh_server, s3_server, tmp_path, "-p", "102")
    oh_server.delete_file(4)
    oh_server.add_file(basename="fitbit-data.json", content=b'{"new": 1}', project_id=102,
                       username="alice", created=datetime(2025, 1, 1, tzinfo=timezone.utc))
    oh_server.add_file(basename="other.json", content=b"{}", project_id=102, username="bob_smith")
    keys = all_keys(s3_server)
    work_before = tree(tmp_path / "work")
    s3_server.reset_counts()
    dry = ["--dry-run", "-p", "102", "--delete", "-f", "jsonl"]
    local = run_cli(oh_server, ["mirror", str(tmp_path / "tree"), *dry])
    remote = mirror(oh_server, s3_server, tmp_path / "work", *dry)
    assert local.code == remote.code == 0, (local.stderr, remote.stderr)
    assert records(remote) == records(local)
    statuses = {r[2] for r in records(remote)}
    assert {"planned", "unchanged", "renamed"} <= statuses and "deleted" in statuses
    assert jsonl(remote.stdout)[-1] == jsonl(local.stdout)[-1]  # the totals record
    counts = s3_server.counts()
    assert counts["PUT"] == counts["POST"] == counts["DELETE"] == 0, s3_server.ops()
    assert counts["LIST"] >= 1  # it did look at the bucket
    assert all_keys(s3_server) == keys
    assert tree(tmp_path / "work") == work_before  # nor the work directory


def test_dry_run_into_a_new_bucket_prefix_creates_nothing(
        oh_server: Any, s3_server: S3Server, tmp_path: Path) -> None:
    local = run_cli(oh_server, ["mirror", str(tmp_path / "tree"), "--dry-run", "-p", "102",
                                "-f", "jsonl"])
    remote = mirror(oh_server, s3_server, tmp_path / "work", "--dry-run", "-p", "102",
                    "-f", "jsonl")
    assert local.code == remote.code == 0, remote.stderr
    assert records(remote) == records(local)
    assert all_keys(s3_server) == [] and not (tmp_path / "work").exists()
    assert s3_server.counts()["PUT"] == 0


def test_repeated_basename_renamed_by_copy_and_delete_as_in_a_tree(
        oh_server: Any, s3_server: S3Server, tmp_path: Path) -> None:
    both(oh_server, s3_server, tmp_path, "-p", "102")
    old_key = "alice/102/fitbit-data.json"
    meta_before = boto(s3_server).head_object(Bucket=s3_server.bucket,
                                              Key="m/" + old_key)["Metadata"]
    new_id = oh_server.add_file(basename="fitbit-data.json", content=b'{"new": true}',
                                project_id=102, username="alice",
                                created=datetime(2025, 1, 1, tzinfo=timezone.utc))
    s3_server.reset_counts()
    local, remote = both(oh_server, s3_server, tmp_path, "-p", "102", "-f", "jsonl")
    assert records(remote) == records(local)
    recs = {r["id"]: r for r in jsonl(remote.stdout)}
    assert recs[2]["status"] == "renamed" and recs[2]["path"] == "alice/102/fitbit-data.2.json"
    assert recs[new_id]["status"] == "downloaded" and recs[new_id]["path"] == old_key
    got = objects(s3_server)
    assert got == tree(tmp_path / "tree")  # the bytes at each key
    assert got[old_key] == content_of(oh_server, new_id)
    assert got["alice/102/fitbit-data.2.json"] == content_of(oh_server, 2)
    c = boto(s3_server)
    moved = c.head_object(Bucket=s3_server.bucket, Key="m/alice/102/fitbit-data.2.json")
    assert moved["Metadata"] == meta_before  # the copy kept the object's own facts
    new = c.head_object(Bucket=s3_server.bucket, Key="m/" + old_key)["Metadata"]
    assert new["ohpub-id"] == str(new_id)
    assert new["ohpub-sha256"] == hashlib.sha256(content_of(oh_server, new_id)).hexdigest()
    ops = s3_server.ops()
    assert ops["CopyObject"] == 2  # via .ohpub/moving/<id>, as a tree moves it
    assert ops["DeleteObject"] + ops["DeleteObjects"] >= 3  # the two copies' sources, the lock
    assert not any(k.startswith("m/.ohpub/moving") for k in all_keys(s3_server))
    index = {r["id"]: r["path"] for r in run_index(s3_server)}
    rows = state_rows(tmp_path / "work")
    assert index[2] == rows[2][0] == "alice/102/fitbit-data.2.json"
    assert index[new_id] == rows[new_id][0] == old_key
    assert {i: p for i, (p, _s) in rows.items() if p} == index


def test_removed_upstream_is_marked_and_kept_without_delete(
        oh_server: Any, s3_server: S3Server, tmp_path: Path) -> None:
    both(oh_server, s3_server, tmp_path, "-p", "102")
    key = "bob_smith/102/fitbit-data.json"
    body = objects(s3_server)[key]
    oh_server.delete_file(4)
    local, remote = both(oh_server, s3_server, tmp_path, "-p", "102", "-f", "jsonl")
    assert records(remote) == records(local)
    assert {r["id"]: r["status"] for r in jsonl(remote.stdout)}[4] == "removed-upstream"
    assert objects(s3_server)[key] == body  # the object stays
    assert state_rows(tmp_path / "work")[4] == (key, "removed-upstream")
    index = {r["id"]: r for r in run_index(s3_server)}
    local_index = {json.loads(x)["id"]: json.loads(x)
                   for x in (tmp_path / "tree" / "index.jsonl").read_text().splitlines()}
    assert index[4]["path"] == key
    assert index[4].get("status") == local_index[4].get("status")
    st = run_cli(oh_server, ["status", URL.format(s3_server.bucket), "-f", "json"],
                 env={**s3_server.env(), "XDG_CACHE_HOME": str(tmp_path / "cache")})
    lst = run_cli(oh_server, ["status", str(tmp_path / "tree"), "-f", "json"])
    assert st.code == lst.code == 0, st.stderr
    assert json.loads(st.stdout)["by_status"] == json.loads(lst.stdout)["by_status"]


def test_a_local_folder_named_s3_colon_stays_local(oh_server: Any, s3_server: S3Server,
                                                  tmp_path: Path,
                                                  monkeypatch: Any) -> None:
    """``./s3:/mirror`` is a folder below a local folder named ``s3:``, not a bucket."""
    (tmp_path / "s3:").mkdir()
    monkeypatch.chdir(tmp_path)
    for dest in ("./s3:/mirror", "s3:/mirror"):
        r = run_cli(oh_server, ["mirror", dest, "-p", "102"], env=s3_server.env())
        assert r.code == 0, r.stderr
        assert (tmp_path / "s3:" / "mirror" / "index.jsonl").is_file()
        v = run_cli(oh_server, ["verify", dest], env=s3_server.env())
        assert v.code == 0, v.stderr
    assert all_keys(s3_server) == []
    import ohpub

    assert {r["path"] for r in ohpub.index("./s3:/mirror")} == set(
        tree(tmp_path / "s3:" / "mirror"))
