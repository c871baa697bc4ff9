"""ohpub/bucket/store.py (obstore) against the S3 server subprocess.

Each test counts the requests the server saw, so the store's calls are shown to be the
S3 operations they claim (one HEAD for size+ETag+metadata, CopyObject+DeleteObject for a
rename, If-None-Match for the lock...).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib.util
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.s3server import S3Server, moto_available

if importlib.util.find_spec("obstore") is None:
    pytest.skip("obstore is not installed (pip install obstore)", allow_module_level=True)
if not moto_available():
    pytest.skip("moto's server mode is not installed: pip install 'moto[server]'",
                allow_module_level=True)

from ohpub.bucket import store as sk  # noqa: E402

MiB = 1024 * 1024


def target_for(s3: S3Server, bucket: str, prefix: str = "mirror", **kw: Any) -> sk.S3Target:
    creds = kw.pop("credentials", sk.Credentials(s3.access_key, s3.secret_key))
    return sk.S3Target(f"s3://{bucket}/{prefix}", endpoint=s3.endpoint_url,
                       region=kw.pop("region", s3.region), credentials=creds, env={}, **kw)


@pytest.fixture
def target(s3_server: S3Server) -> sk.S3Target:
    return target_for(s3_server, s3_server.bucket)


def boto(s3: S3Server) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key,
                        aws_secret_access_key=s3.secret_key, region_name=s3.region)


def test_put_file_one_put_below_threshold(target: sk.S3Target, s3_server: S3Server,
                                          tmp_path: Path) -> None:
    local = tmp_path / "a.json"
    local.write_bytes(b"{}" * 500)
    etag = target.put_file("alice/102/a.json", local, {"ohpub-md5": "x" * 32, "ohpub-id": "7"})
    assert s3_server.ops() == {"PutObject": 1}
    head = target.head("alice/102/a.json")
    assert head is not None
    assert (head.size, head.etag) == (1000, etag)
    assert head.metadata == {"ohpub-md5": "x" * 32, "ohpub-id": "7"}
    assert s3_server.ops()["HeadObject"] == 1  # one request for size, ETag and metadata
    # the key is under the target's prefix
    assert boto(s3_server).head_object(Bucket=s3_server.bucket,
                                       Key="mirror/alice/102/a.json")["ContentLength"] == 1000


def test_put_file_multipart_above_threshold(target: sk.S3Target, s3_server: S3Server,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setenv("OHPUB_S3_MULTIPART_THRESHOLD", str(5 * MiB))  # parts of 5 MiB
    local = tmp_path / "big.bin"
    data = os.urandom(11 * MiB)
    local.write_bytes(data)
    etag = target.put_file("big.bin", local, {"ohpub-md5": hashlib.md5(data).hexdigest()})
    assert s3_server.ops() == {"CreateMultipartUpload": 1, "UploadPart": 3,
                               "CompleteMultipartUpload": 1}
    assert etag.endswith('-3"')  # a multipart ETag is not the MD5: keep the MD5 in metadata
    head = target.head("big.bin")
    assert head is not None and head.size == 11 * MiB
    assert head.metadata["ohpub-md5"] == hashlib.md5(data).hexdigest()
    assert target.md5("big.bin") == hashlib.md5(data).hexdigest()  # streamed read
    assert target.list_uploads() == []


def test_head_missing_is_none(target: sk.S3Target) -> None:
    assert target.head("nope") is None


def test_list_pages_through_listobjectsv2() -> None:
    with S3Server(max_keys=3) as s3:  # pages of 3 keys
        s3.create_bucket("listing")
        t = target_for(s3, "listing")
        client = boto(s3)
        for i in range(10):
            client.put_object(Bucket="listing", Key=f"mirror/u/p/{i:02d}", Body=b"x" * i)
        client.put_object(Bucket="listing", Key="mirror/u/pq/other", Body=b"")
        client.put_object(Bucket="listing", Key="outside/u/p/00", Body=b"")
        s3.reset_counts()
        got = list(t.list("u/p"))
        assert [k for k, _, _ in got] == [f"u/p/{i:02d}" for i in range(10)]  # not u/pq/
        assert [size for _, size, _ in got] == list(range(10))
        assert s3.ops() == {"ListObjectsV2": 4}  # 10 keys in pages of 3
        assert len(list(t.list())) == 11


def test_rename_keeps_metadata(target: sk.S3Target, s3_server: S3Server,
                               tmp_path: Path) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"content")
    target.put_file(".ohpub/partial/f", local, {"ohpub-md5": "m"})
    s3_server.reset_counts()
    target.rename(".ohpub/partial/f", "alice/102/f")
    # obstore deletes the source with a bulk DeleteObjects (POST ?delete); for S3 compatibles
    # without it, S3Store(disable_bulk_delete=True)
    assert s3_server.ops() == {"CopyObject": 1, "DeleteObjects": 1}
    assert target.head(".ohpub/partial/f") is None
    head = target.head("alice/102/f")
    assert head is not None and head.metadata == {"ohpub-md5": "m"} and head.size == 7


def test_delete_and_delete_missing(target: sk.S3Target, tmp_path: Path) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"x")
    target.put_file("f", local, {})
    target.delete("f")
    assert target.head("f") is None
    target.delete("f")  # no error: S3 answers 204 for a missing key too


def test_lock_object(target: sk.S3Target, s3_server: S3Server) -> None:
    etag = target.create_lock(".ohpub/lock", b"pid 1")
    assert etag
    assert target.create_lock(".ohpub/lock", b"pid 2") is None  # already exists
    assert s3_server.stats()["statuses"] == {"200": 1, "412": 1}
    new = target.refresh_lock(".ohpub/lock", b"pid 1, later", etag)
    assert new and new != etag
    assert target.refresh_lock(".ohpub/lock", b"pid 1", etag) is None  # stale ETag
    target.delete(".ohpub/lock")
    assert target.create_lock(".ohpub/lock", b"pid 3")


def test_lock_race_one_winner(target: sk.S3Target) -> None:
    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: target.create_lock(".ohpub/lock", b"%d" % i),
                                range(8)))
    assert sum(r is not None for r in results) == 1


def test_read_chunks_streams(target: sk.S3Target, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 5)
    (tmp_path / "f").write_bytes(data)
    target.put_file("f", tmp_path / "f", {})
    chunks = list(target.read_chunks("f", chunk=MiB))
    assert b"".join(bytes(c) for c in chunks) == data and len(chunks) >= 2


def test_list_and_abort_inprogress_uploads(target: sk.S3Target, s3_server: S3Server) -> None:
    client, b = boto(s3_server), s3_server.bucket
    ours = [client.create_multipart_upload(Bucket=b, Key=f"mirror/{k}")["UploadId"]
            for k in ("alice/1/x.bin", "alice/1/x.bin", "bob/2/y.bin")]
    client.create_multipart_upload(Bucket=b, Key="not-ours/z.bin")
    s3_server.reset_counts()
    listed = target.list_uploads()
    assert sorted(u.upload_id for u in listed) == sorted(ours)
    assert {u.key for u in listed} == {"mirror/alice/1/x.bin", "mirror/bob/2/y.bin"}
    assert [u.key for u in target.list_uploads("bob/")] == ["mirror/bob/2/y.bin"]
    for up in listed:
        target.abort_upload(up)
    assert target.list_uploads() == []
    assert s3_server.ops() == {"ListMultipartUploads": 3, "AbortMultipartUpload": 3}
    assert len(client.list_multipart_uploads(Bucket=b)["Uploads"]) == 1  # not-ours is left


def test_list_uploads_follows_markers(s3_server: S3Server) -> None:
    """moto's ListMultipartUploads never pages (it ignores max-uploads and the markers, and
    says IsTruncated false), so the paging loop is shown on S3's documented answers."""
    client, b = boto(s3_server), s3_server.bucket
    for i in range(5):
        client.create_multipart_upload(Bucket=b, Key=f"mirror/k{i}")
    t = target_for(s3_server, b)
    real = t.list_uploads()
    assert [u.key for u in real] == [f"mirror/k{i}" for i in range(5)]

    ns = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'

    def page(keys: list[int], truncated: bool) -> Any:
        ups = "".join(f"<Upload><Key>mirror/k{i}</Key><UploadId>u{i}</UploadId>"
                      f"<Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload>" for i in keys)
        more = (f"<NextKeyMarker>mirror/k{keys[-1]}</NextKeyMarker>"
                f"<NextUploadIdMarker>u{keys[-1]}</NextUploadIdMarker>") if truncated else ""
        body = (f"<ListMultipartUploadsResult {ns}><IsTruncated>{str(truncated).lower()}"
                f"</IsTruncated>{more}{ups}</ListMultipartUploadsResult>")
        return type("Resp", (), {"content": body.encode()})()

    pages = iter([page([0, 1], True), page([2, 3], True), page([4], False)])
    queries: list[dict[str, str]] = []

    def fake(method: str, key: str, query: dict[str, str], **kw: Any) -> Any:
        queries.append(dict(query))
        return next(pages)

    t._signed = fake  # type: ignore[method-assign]
    assert [u.upload_id for u in t.list_uploads()] == ["u0", "u1", "u2", "u3", "u4"]
    assert [q.get("key-marker") for q in queries] == [None, "mirror/k1", "mirror/k3"]
    assert queries[-1]["upload-id-marker"] == "u3"


# -- errors: one clear message each ---------------------------------------------------------


def test_error_no_such_bucket(s3_server: S3Server) -> None:
    t = target_for(s3_server, "no-such-bucket")
    with pytest.raises(sk.BucketError) as info:
        t.check()
    assert info.value.kind == "no_bucket" and "does not exist" in str(info.value)
    assert t.head("k") is None  # why check() first: a HEAD cannot tell


def test_error_wrong_secret(s3_server: S3Server) -> None:
    t = target_for(s3_server, s3_server.bucket,
                   credentials=sk.Credentials(s3_server.access_key, "wrong"))
    with pytest.raises(sk.BucketError) as info:
        t.check()
    assert info.value.kind == "bad_secret"
    with pytest.raises(sk.BucketError) as info:
        t.head("k")
    assert info.value.kind == "denied" and "403" in str(info.value)  # HEAD: no body, no code
    with pytest.raises(sk.BucketError) as info:
        t.list_uploads()
    assert info.value.kind == "bad_secret"


def test_error_unknown_key_id(s3_server: S3Server) -> None:
    t = target_for(s3_server, s3_server.bucket, credentials=sk.Credentials("AKIANOPE", "x"))
    with pytest.raises(sk.BucketError) as info:
        t.check()
    assert info.value.kind == "bad_key_id" and "AWS_ACCESS_KEY_ID" in str(info.value)


def test_error_wrong_region(s3_server: S3Server) -> None:
    t = target_for(s3_server, s3_server.bucket, region="eu-west-1")
    with pytest.raises(sk.BucketError) as info:
        t.check()  # obstore does not follow the hint, unlike botocore
    assert info.value.kind == "wrong_region" and "us-east-1" in str(info.value)


def test_error_not_found_on_read(target: sk.S3Target) -> None:
    with pytest.raises(sk.BucketError) as info:
        target.md5("missing")
    assert info.value.kind == "not_found"


def test_error_unreachable_is_quick(s3_server: S3Server) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the with ends: nothing listens there
    t = sk.S3Target("s3://b/p", endpoint=f"http://127.0.0.1:{port}", region="us-east-1",
                    credentials=sk.Credentials("a", "b"), env={}, max_retries=1,
                    retry_timeout_s=5)
    t0 = time.monotonic()
    with pytest.raises(sk.BucketError) as info:
        t.check()
    assert info.value.kind == "unreachable", str(info.value)
    assert time.monotonic() - t0 < 15


# -- credentials as the AWS tools find them --------------------------------------------------


def test_credentials_from_environment(s3_server: S3Server) -> None:
    t = sk.S3Target(f"s3://{s3_server.bucket}/m", env=s3_server.env())
    t.check()
    assert t.create_lock("lock", b"x")


def test_credentials_from_profile(s3_server: S3Server, tmp_path: Path) -> None:
    (tmp_path / "credentials").write_text(
        f"[ohpub]\naws_access_key_id = {s3_server.access_key}\n"
        f"aws_secret_access_key = {s3_server.secret_key}\n")
    (tmp_path / "config").write_text(
        f"[profile ohpub]\nregion = {s3_server.region}\nendpoint_url = {s3_server.endpoint_url}\n")
    env = {"AWS_PROFILE": "ohpub", "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
           "AWS_CONFIG_FILE": str(tmp_path / "config")}
    t = sk.S3Target(f"s3://{s3_server.bucket}/m", env=env)
    assert t.endpoint == s3_server.endpoint_url
    t.check()
    assert t.list_uploads() == []


def test_threads_share_one_target(target: sk.S3Target, s3_server: S3Server,
                                  tmp_path: Path) -> None:
    files = []
    for i in range(40):
        f = tmp_path / f"f{i}"
        f.write_bytes(os.urandom(2000))
        files.append(f)
    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda f: target.put_file(f"t/{f.name}", f, {"n": f.name}), files))
        heads = list(pool.map(lambda f: target.head(f"t/{f.name}"), files))
    assert all(h is not None and h.metadata == {"n": f.name}
               for h, f in zip(heads, files, strict=True))
    assert s3_server.ops() == {"PutObject": 40, "HeadObject": 40}


@pytest.fixture(autouse=True)
def _no_aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """obstore reads AWS_* from the process environment on top of its config: clear them, and
    point its instance-metadata look-up at a closed loopback port."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
    yield
