"""The S3 test server (tests/s3server.py) works, and does what S3 does for what ohpub needs.

Driven with boto3, which moto depends on (so it is there whenever these tests run). Each
test documents moto's behaviour as it really is; where moto differs from AWS S3 it says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.s3server import METHOD_CLASSES, S3Server, classify, moto_available

pytestmark = pytest.mark.skipif(
    not moto_available(), reason="moto's server mode is not installed: pip install 'moto[server]'"
)

MiB = 1024 * 1024


def client(s3: S3Server, **overrides: Any) -> Any:
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {
        "endpoint_url": s3.endpoint_url,
        "aws_access_key_id": s3.access_key,
        "aws_secret_access_key": s3.secret_key,
        "region_name": s3.region,
        "config": Config(retries={"max_attempts": 1}, max_pool_connections=16),
    }
    kwargs.update(overrides)
    return boto3.client("s3", **kwargs)


def error_of(call: Any, **kwargs: Any) -> tuple[int, str]:
    """(HTTP status, S3 error code) that ``call(**kwargs)`` fails with."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        call(**kwargs)
    resp = info.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"]


# -- the fixture itself ----------------------------------------------------------------------


def test_starts_a_separate_process_on_loopback_and_stops_it() -> None:
    server = S3Server()
    with server:
        assert server.running and server.pid != os.getpid()
        assert server.endpoint_url.startswith("http://127.0.0.1:")
        assert Path(f"/proc/{server.pid}").exists()
        server.create_bucket("lifecycle")
        assert client(server).list_buckets()["Buckets"][0]["Name"] == "lifecycle"
        pid = server.pid
    assert not server.running
    assert not Path(f"/proc/{pid}/status").exists() or "zombie" in Path(
        f"/proc/{pid}/status").read_text()


def test_counts_requests_by_method_class_and_operation(s3_server: S3Server) -> None:
    c = client(s3_server)
    b = s3_server.bucket
    assert s3_server.counts() == dict.fromkeys(METHOD_CLASSES, 0)
    c.put_object(Bucket=b, Key="k", Body=b"x" * 100)
    c.head_object(Bucket=b, Key="k")
    c.get_object(Bucket=b, Key="k")["Body"].read()
    c.list_objects_v2(Bucket=b)
    c.list_multipart_uploads(Bucket=b)
    c.copy_object(Bucket=b, Key="k2", CopySource={"Bucket": b, "Key": "k"})
    up = c.create_multipart_upload(Bucket=b, Key="m")
    c.abort_multipart_upload(Bucket=b, Key="m", UploadId=up["UploadId"])
    c.delete_object(Bucket=b, Key="k")
    assert s3_server.counts() == {"GET": 1, "PUT": 2, "HEAD": 1, "POST": 1, "DELETE": 2,
                                  "LIST": 2}
    assert s3_server.ops() == {
        "PutObject": 1, "HeadObject": 1, "GetObject": 1, "ListObjectsV2": 1,
        "ListMultipartUploads": 1, "CopyObject": 1, "CreateMultipartUpload": 1,
        "AbortMultipartUpload": 1, "DeleteObject": 1,
    }
    stats = s3_server.stats()
    assert stats["total"] == 9 and stats["bytes_in"] >= 100 and stats["bytes_out"] >= 100
    assert 1 <= stats["connections"] <= 9  # boto3 keeps its connection alive
    assert [r["op"] for r in s3_server.requests()][:2] == ["PutObject", "HeadObject"]
    s3_server.reset_counts()
    assert s3_server.stats()["total"] == 0


@pytest.mark.parametrize("http_server", ["werkzeug", "waitress"])
def test_connections_kept_alive_only_by_waitress(http_server: str) -> None:
    if http_server == "waitress":
        pytest.importorskip("waitress")
    with S3Server(http_server=http_server) as s3:
        s3.create_bucket("keepalive")
        c = client(s3)
        for i in range(5):
            c.put_object(Bucket="keepalive", Key=f"k{i}", Body=b"x")
        # werkzeug's development server (moto's own) sends Connection: close every time
        assert s3.stats()["connections"] == (1 if http_server == "waitress" else 5)


def test_listing_page_size_can_be_lowered() -> None:
    with S3Server(max_keys=4) as s3:
        s3.create_bucket("pages")
        c = client(s3)
        for i in range(10):
            c.put_object(Bucket="pages", Key=f"k{i}", Body=b"x")
        page = c.list_objects_v2(Bucket="pages")
        assert page["KeyCount"] == 4 and page["IsTruncated"]


def test_classify_without_a_server() -> None:
    assert classify("GET", "/b", "list-type=2&prefix=a", {}) == ("LIST", "ListObjectsV2")
    assert classify("GET", "/b/", "uploads&prefix=a", {}) == ("LIST", "ListMultipartUploads")
    assert classify("GET", "/b/k", "uploadId=1", {}) == ("LIST", "ListParts")
    assert classify("PUT", "/b/k", "partNumber=1&uploadId=1", {}) == ("PUT", "UploadPart")
    assert classify("PUT", "/b/k", "", {"x-amz-copy-source": "b/j"}) == ("PUT", "CopyObject")
    assert classify("POST", "/b/k", "uploadId=1", {}) == ("POST", "CompleteMultipartUpload")
    assert classify("POST", "/b", "delete", {}) == ("POST", "DeleteObjects")
    assert classify("HEAD", "/b", "", {}) == ("HEAD", "HeadBucket")


def test_env_is_enough_for_a_client_in_a_child_process(s3_server: S3Server) -> None:
    client(s3_server).put_object(Bucket=s3_server.bucket, Key="from-env", Body=b"e")
    code = (f"import boto3; print(boto3.client('s3').get_object(Bucket={s3_server.bucket!r},"
            " Key='from-env')['Body'].read().decode())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3_server.env(), AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "e"


# -- S3 behaviour ohpub relies on ------------------------------------------------------------


def test_put_get_head_with_user_metadata(s3_server: S3Server) -> None:
    c, b = client(s3_server), s3_server.bucket
    key = "alice/102/fitbit data+ü.json"  # space, plus and non-ASCII survive the round trip
    put = c.put_object(Bucket=b, Key=key, Body=b"{}" * 10, ContentType="application/json",
                       Metadata={"ohpub-md5": "0" * 32, "ohpub-id": "42"})
    head = c.head_object(Bucket=b, Key=key)
    assert head["ContentLength"] == 20 and head["ETag"] == put["ETag"]
    assert head["Metadata"] == {"ohpub-md5": "0" * 32, "ohpub-id": "42"}
    assert head["ContentType"] == "application/json"
    got = c.get_object(Bucket=b, Key=key)
    assert got["Body"].read() == b"{}" * 10 and got["Metadata"]["ohpub-id"] == "42"
    # on the wire: x-amz-meta-* headers
    assert got["ResponseMetadata"]["HTTPHeaders"]["x-amz-meta-ohpub-id"] == "42"
    assert c.get_object(Bucket=b, Key=key, Range="bytes=2-5")["Body"].read() == b"{}{}"


def test_list_objects_v2_pages(s3_server: S3Server) -> None:
    c, b = client(s3_server), s3_server.bucket
    for i in range(25):
        c.put_object(Bucket=b, Key=f"p/{i:03d}", Body=b"x")
    c.put_object(Bucket=b, Key="p/sub/deeper", Body=b"x")
    c.put_object(Bucket=b, Key="q/other", Body=b"x")
    keys, token, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = c.list_objects_v2(Bucket=b, Prefix="p/", MaxKeys=10, **kw)
        pages += 1
        keys += [o["Key"] for o in page.get("Contents", [])]
        assert page["KeyCount"] == len(page.get("Contents", []))
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert pages == 3 and len(keys) == 26 and keys == sorted(keys)
    after = c.list_objects_v2(Bucket=b, Prefix="p/", StartAfter="p/020")
    assert [o["Key"] for o in after["Contents"]][:2] == ["p/021", "p/022"]
    tree = c.list_objects_v2(Bucket=b, Prefix="p/", Delimiter="/")
    assert tree["CommonPrefixes"] == [{"Prefix": "p/sub/"}] and tree["KeyCount"] == 26
    assert s3_server.counts()["LIST"] == 5


def test_multipart_upload_list_abort_complete(s3_server: S3Server) -> None:
    c, b = client(s3_server), s3_server.bucket
    done = c.create_multipart_upload(Bucket=b, Key="big/a.bin", Metadata={"ohpub-md5": "m"})
    stale = c.create_multipart_upload(Bucket=b, Key="big/b.bin")
    c.create_multipart_upload(Bucket=b, Key="elsewhere/c.bin")
    part1 = b"1" * (5 * MiB)
    etags = [c.upload_part(Bucket=b, Key="big/a.bin", UploadId=done["UploadId"], PartNumber=n,
                           Body=body)["ETag"] for n, body in ((1, part1), (2, b"2"))]
    listed = c.list_multipart_uploads(Bucket=b, Prefix="big/")["Uploads"]
    assert sorted((u["Key"], u["UploadId"]) for u in listed) == sorted(
        [("big/a.bin", done["UploadId"]), ("big/b.bin", stale["UploadId"])])
    assert [p["Size"] for p in c.list_parts(Bucket=b, Key="big/a.bin",
                                            UploadId=done["UploadId"])["Parts"]] == [5 * MiB, 1]
    c.abort_multipart_upload(Bucket=b, Key="big/b.bin", UploadId=stale["UploadId"])
    out = c.complete_multipart_upload(
        Bucket=b, Key="big/a.bin", UploadId=done["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in
                                   zip((1, 2), etags, strict=True)]})
    assert out["ETag"].endswith('-2"')  # a multipart ETag is not the MD5 of the content
    head = c.head_object(Bucket=b, Key="big/a.bin")
    assert head["ContentLength"] == 5 * MiB + 1 and head["Metadata"] == {"ohpub-md5": "m"}
    assert c.list_multipart_uploads(Bucket=b, Prefix="big/").get("Uploads", []) == []
    assert error_of(c.head_object, Bucket=b, Key="big/b.bin") == (404, "404")


def test_multipart_part_size_rule_is_aws(s3_server: S3Server) -> None:
    c, b = client(s3_server), s3_server.bucket
    up = c.create_multipart_upload(Bucket=b, Key="small-parts")
    etags = [c.upload_part(Bucket=b, Key="small-parts", UploadId=up["UploadId"], PartNumber=n,
                           Body=b"x" * 1024)["ETag"] for n in (1, 2)]
    parts = [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags, strict=True)]
    assert error_of(c.complete_multipart_upload, Bucket=b, Key="small-parts",
                    UploadId=up["UploadId"],
                    MultipartUpload={"Parts": parts}) == (400, "EntityTooSmall")


def test_copy_object_keeps_or_replaces_metadata(s3_server: S3Server) -> None:
    c, b = client(s3_server), s3_server.bucket
    c.put_object(Bucket=b, Key="src", Body=b"data", Metadata={"ohpub-md5": "abc"},
                 ContentType="text/plain")
    c.copy_object(Bucket=b, Key="kept", CopySource={"Bucket": b, "Key": "src"})
    kept = c.head_object(Bucket=b, Key="kept")
    assert kept["Metadata"] == {"ohpub-md5": "abc"} and kept["ContentType"] == "text/plain"
    c.copy_object(Bucket=b, Key="replaced", CopySource={"Bucket": b, "Key": "src"},
                  MetadataDirective="REPLACE", Metadata={"ohpub-md5": "new"})
    assert c.head_object(Bucket=b, Key="replaced")["Metadata"] == {"ohpub-md5": "new"}
    c.delete_object(Bucket=b, Key="src")  # copy + delete = rename
    assert error_of(c.head_object, Bucket=b, Key="src") == (404, "404")
    assert c.get_object(Bucket=b, Key="kept")["Body"].read() == b"data"


def test_conditional_put_if_none_match_star(s3_server: S3Server) -> None:
    c, b = client(s3_server), s3_server.bucket
    c.put_object(Bucket=b, Key=".ohpub/lock", Body=b"owner 1", IfNoneMatch="*")
    assert error_of(c.put_object, Bucket=b, Key=".ohpub/lock", Body=b"owner 2",
                    IfNoneMatch="*") == (412, "PreconditionFailed")
    assert c.get_object(Bucket=b, Key=".ohpub/lock")["Body"].read() == b"owner 1"
    etag = c.head_object(Bucket=b, Key=".ohpub/lock")["ETag"]
    # If-Match: replace only the version we hold (a lock refresh)
    assert error_of(c.put_object, Bucket=b, Key=".ohpub/lock", Body=b"x",
                    IfMatch='"0000"') == (412, "PreconditionFailed")
    c.put_object(Bucket=b, Key=".ohpub/lock", Body=b"owner 1 again", IfMatch=etag)
    c.delete_object(Bucket=b, Key=".ohpub/lock")
    c.put_object(Bucket=b, Key=".ohpub/lock", Body=b"owner 3", IfNoneMatch="*")


def test_conditional_complete_multipart_upload(s3_server: S3Server) -> None:
    c, b = client(s3_server), s3_server.bucket
    c.put_object(Bucket=b, Key="exists", Body=b"x")
    up = c.create_multipart_upload(Bucket=b, Key="exists")
    etag = c.upload_part(Bucket=b, Key="exists", UploadId=up["UploadId"], PartNumber=1,
                         Body=b"y")["ETag"]
    assert error_of(c.complete_multipart_upload, Bucket=b, Key="exists",
                    UploadId=up["UploadId"], IfNoneMatch="*",
                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
                    ) == (412, "PreconditionFailed")


def test_racing_conditional_creates_have_one_winner(s3_server: S3Server) -> None:
    """moto alone checks then stores without a lock; the server serialises conditional
    writes, so of eight racing creates exactly one wins, as on S3."""
    from botocore.exceptions import ClientError

    c, b = client(s3_server), s3_server.bucket

    def create(key: str, i: int, barrier: threading.Barrier, results: list[str]) -> None:
        barrier.wait()
        try:
            c.put_object(Bucket=b, Key=key, Body=b"%d" % i, IfNoneMatch="*")
            results.append("won")
        except ClientError as exc:
            results.append(exc.response["Error"]["Code"])

    for trial in range(5):
        barrier, results = threading.Barrier(8), []
        threads = [threading.Thread(target=create, args=(f"lock{trial}", i, barrier, results))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["PreconditionFailed"] * 7 + ["won"]


def test_a_delay_holds_matching_requests_until_cleared(s3_server: S3Server) -> None:
    """A held PutObject has arrived (counted) but is not stored nor answered until the
    delays are cleared; then it is stored whole. Requests the pattern does not match, or
    of another operation, are not held."""
    c, b = client(s3_server), s3_server.bucket
    s3_server.delay("PutObject", 600, path=r"/held/")
    done = threading.Event()

    def put() -> None:
        c.put_object(Bucket=b, Key="held/a", Body=b"x" * 1000)
        done.set()

    t = threading.Thread(target=put, daemon=True)
    try:
        t.start()
        while not any(q["path"].endswith("/held/a") for q in s3_server.requests()):
            assert t.is_alive()
            time.sleep(0.01)
        c.put_object(Bucket=b, Key="free/a", Body=b"y")  # not matched: answered
        assert error_of(c.head_object, Bucket=b, Key="held/a") == (404, "404")
        assert not done.is_set()
    finally:
        s3_server.clear_delays()
    t.join(timeout=60)
    assert done.is_set()
    assert c.get_object(Bucket=b, Key="held/a")["Body"].read() == b"x" * 1000


# -- errors, as S3 gives them ----------------------------------------------------------------


def test_errors_look_like_s3(s3_server: S3Server) -> None:
    c, b = client(s3_server), s3_server.bucket
    assert error_of(c.get_object, Bucket=b, Key="missing") == (404, "NoSuchKey")
    assert error_of(c.head_object, Bucket=b, Key="missing") == (404, "404")  # HEAD: no body
    assert error_of(c.list_objects_v2, Bucket="no-such-bucket") == (404, "NoSuchBucket")
    assert error_of(c.put_object, Bucket="no-such-bucket", Key="k",
                    Body=b"") == (404, "NoSuchBucket")
    wrong_secret = client(s3_server, aws_secret_access_key="wrong")
    assert error_of(wrong_secret.list_objects_v2, Bucket=b) == (403, "SignatureDoesNotMatch")
    unknown_key = client(s3_server, aws_access_key_id="AKIAUNKNOWN")
    assert error_of(unknown_key.list_objects_v2, Bucket=b) == (403, "InvalidAccessKeyId")
    assert error_of(unknown_key.head_object, Bucket=b, Key="k") == (403, "403")
    assert s3_server.stats()["statuses"] == {"404": 4, "403": 3}
    # A scope for another region is refused with 400 AuthorizationHeaderMalformed naming the
    # bucket's region; botocore reads it and signs again for that region, so it succeeds.
    s3_server.reset_counts()
    client(s3_server, region_name="eu-west-1").list_objects_v2(Bucket=b)
    assert [r["status"] for r in s3_server.requests()][0] == 400
    assert s3_server.requests()[-1]["status"] == 200


def test_check_auth_false_is_motos_accept_anything() -> None:
    with S3Server(check_auth=False) as s3:
        s3.create_bucket("open")
        anyone = client(s3, aws_access_key_id="whoever", aws_secret_access_key="whatever")
        anyone.put_object(Bucket="open", Key="k", Body=b"v")
        assert anyone.get_object(Bucket="open", Key="k")["Body"].read() == b"v"
