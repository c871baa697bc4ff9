"""Tests of the local Open Humans server itself (tests/ohserver.py), over real sockets."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3

from tests.ohserver import Capacity, ListingStats, OHServer, SyntheticContent, named_content
from tests.ohserver import main as ohserver_main

REFERENCE = Path("/work/shared/reference/samples")
UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
FILE_KEYS = [
    "id",
    "basename",
    "created",
    "datatypes",
    "download_url",
    "metadata",
    "source_project",
    "user",
]
ROOT = Path(__file__).resolve().parent.parent


def get(server: OHServer, path: str, **kw: object) -> requests.Response:
    return requests.get(server.url(path), timeout=10, **kw)  # type: ignore[arg-type]


def listing(server: OHServer, path: str) -> dict:
    r = get(server, path)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    return r.json()


def crawl(server: OHServer, path: str, limit: int) -> list[int]:
    ids: list[int] = []
    url: str | None = server.url(f"{path}?limit={limit}")
    while url:
        page = requests.get(url, timeout=10).json()
        ids += [item["id"] for item in page["results"]]
        url = page["next"]
    return ids


def location(server: OHServer, file_id: int) -> str:
    """The storage URL the download view redirects to, with a fresh key."""
    r = requests.get(server.download_url(file_id), allow_redirects=False, timeout=5)
    assert r.status_code == 302
    return r.headers["Location"]


def reference_body(name: str) -> dict:
    path = REFERENCE / "real-server" / name
    if not path.exists():
        pytest.skip("reference samples not available")
    return json.loads(path.read_text().split("\n\n", 2)[2])


# --- lifecycle ------------------------------------------------------------------------------


def test_start_is_fast_and_stop_closes_everything() -> None:
    t0 = time.perf_counter()
    server = OHServer().load_sample().start()
    started = time.perf_counter() - t0
    session = requests.Session()
    assert session.get(server.api_url + "datafiles/", timeout=5).status_code == 200
    port = urlsplit(server.base_url).port
    t0 = time.perf_counter()
    server.stop()  # an idle keep-alive connection is open: must not block
    stopped = time.perf_counter() - t0
    assert started < 0.25 and stopped < 0.5, (started, stopped)
    assert not [t for t in threading.enumerate() if t.name.startswith("ohserver")]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    session.close()


def test_keep_alive_reuses_connections(oh_server: OHServer) -> None:
    with requests.Session() as s:
        for _ in range(5):
            assert s.get(oh_server.api_url + "projects/", timeout=5).status_code == 200
        page = s.get(oh_server.api_url + "datafiles/", timeout=5).json()
        url = page["results"][2]["download_url"]
        for _ in range(3):
            assert s.get(url, timeout=5).status_code == 200
    api = [e.connection for e in oh_server.log if e.role in ("api", "download")]
    storage = [e.connection for e in oh_server.log if e.role == "storage"]
    assert len(set(api)) == 1 and len(set(storage)) == 1


# --- listings --------------------------------------------------------------------------------


def test_datafiles_listing_like_sample_01(oh_server: OHServer) -> None:
    page = listing(oh_server, "/api/public/datafiles/")
    assert list(page) == ["count", "next", "previous", "results"]
    assert (page["count"], page["next"], page["previous"]) == (6, None, None)
    base = oh_server.base_url
    by_id = {item["id"]: item for item in page["results"]}
    assert sorted(by_id) == [1, 2, 3, 4, 5, 6]
    for item in page["results"]:
        assert list(item) == FILE_KEYS
        assert re.fullmatch(
            rf"{base}/data-management/datafile-download/{item['id']}/\?key={UUID4}",
            item["download_url"],
        )
    one = by_id[1]
    assert one["basename"] == "fitbit-data.json" and one["created"] == "2024-03-01T12:00:00Z"
    assert sorted(one["datatypes"]) == [
        f"{base}/api/public/datatype/1/",
        f"{base}/api/public/datatype/2/",
    ]
    assert one["metadata"] == {
        "tags": ["sample", "fitbit-connection"],
        "description": "fitbit-data.json from Fitbit Connection",
    }
    assert one["source_project"] == f"{base}/api/public/project/102/"
    assert one["user"] == {"id": 2, "name": "Alice Example", "username": "alice"}
    assert by_id[2]["created"] == "2024-03-01T13:30:00Z"
    assert by_id[3]["basename"] == "ag-000001.fastq.gz"
    assert by_id[6]["user"] == {"id": None, "name": None, "username": None}
    # ordered by member: alice's three, then bob's two, then (hidden) carol's
    assert [set(x["id"] for x in page["results"][a:b]) for a, b in ((0, 3), (3, 5), (5, 6))] == [
        {1, 2, 3},
        {4, 5},
        {6},
    ]
    if (REFERENCE / "real-server").exists():
        sample = reference_body("01_datafiles.txt")["results"]
        assert [sorted(x) for x in sample] == [sorted(x) for x in page["results"]]


def test_paging_envelope_like_drf(oh_server: OHServer) -> None:
    base = oh_server.base_url + "/api/public/datafiles/"
    first = listing(oh_server, "/api/public/datafiles/?limit=2")
    assert (first["count"], first["next"], first["previous"]) == (
        6,
        base + "?limit=2&offset=2",
        None,
    )
    mid = listing(oh_server, "/api/public/datafiles/?limit=2&offset=2")
    assert (mid["next"], mid["previous"]) == (base + "?limit=2&offset=4", base + "?limit=2")
    last = listing(oh_server, "/api/public/datafiles/?offset=4&limit=2")
    assert last["next"] is None and last["previous"] == base + "?limit=2&offset=2"
    assert len(last["results"]) == 2
    for bad in ("0", "-3", "abc", ""):
        page = listing(oh_server, f"/api/public/datafiles/?limit={bad}")
        assert len(page["results"]) == 6 and page["next"] is None
    page = listing(oh_server, "/api/public/datafiles/?limit=1&offset=zz")
    assert page["previous"] is None and page["next"] == base + "?limit=1&offset=1"
    past = listing(oh_server, "/api/public/datafiles/?limit=2&offset=50")
    assert past["results"] == [] and past["next"] is None
    assert past["previous"] == base + "?limit=2&offset=48"
    # other query parameters are kept, sorted like DRF's replace_query_param does
    page = listing(oh_server, "/api/public/datafiles/?username=alice&limit=4")
    assert page["next"] == base + "?limit=4&offset=4&username=alice"


def test_default_page_is_100_without_maximum() -> None:
    with OHServer() as server:
        server.generate(250, 7, 10, 10)
        page = listing(server, "/api/public/datafiles/")
        assert len(page["results"]) == 100 and page["count"] == 250
        assert page["next"].endswith("/api/public/datafiles/?limit=100&offset=100")
        big = listing(server, "/api/public/datafiles/?limit=1000")
        assert len(big["results"]) == 250 and big["next"] is None


def test_next_uses_request_host_but_urls_use_canonical_host(oh_server: OHServer) -> None:
    port = urlsplit(oh_server.base_url).port
    r = get(oh_server, "/api/public/datafiles/?limit=1", headers={"Host": f"localhost:{port}"})
    page = r.json()
    assert page["next"] == f"http://localhost:{port}/api/public/datafiles/?limit=1&offset=1"
    item = page["results"][0]
    assert item["download_url"].startswith(oh_server.base_url + "/data-management/")
    assert item["source_project"].startswith(oh_server.base_url + "/api/public/project/")


def test_query_filters_are_ignored(oh_server: OHServer) -> None:
    for query in ("source_project_id=128", "datatype_id=3", "source=direct-sharing-128"):
        assert listing(oh_server, f"/api/public/datafiles/?{query}")["count"] == 6
    assert listing(oh_server, "/api/public/project/128/datafiles/?username=carol")["count"] == 2


def test_username_param_blanks_hidden_members_files(oh_server: OHServer) -> None:
    page = listing(oh_server, "/api/public/datafiles/?username=carol")
    assert page["count"] == 6 and page["results"].count({}) == 1
    assert 6 not in [x.get("id") for x in page["results"]]
    page = listing(oh_server, "/api/public/datafiles/?username=alice")  # substring test only
    assert page["results"].count({}) == 0
    assert listing(oh_server, "/api/public/datafiles/?username=xcarolx")["results"].count({}) == 1
    assert get(oh_server, "/api/public/datafile/6/?username=carol").json() == {}
    oh_server.faults.empty_items = 2
    page = listing(oh_server, "/api/public/datafiles/?username=alice")
    assert page["count"] == 6 and len(page["results"]) == 8 and page["results"].count({}) == 2
    assert listing(oh_server, "/api/public/datafiles/")["results"].count({}) == 0


def test_order_by_username_and_shuffle_within_member(oh176: OHServer) -> None:
    members = [
        "benc",
        "esenabre",
        "jasteige",
        "mw_pw",
        "MxRemy",
        "phenylalanine",
        "rssfed23",
        "stephenbrad",
        "tuuli",
        "Whoisdsmith",
    ]
    orders = set()
    for _ in range(10):
        results = listing(oh176, "/api/public/project/176/datafiles/")["results"]
        names = [x["user"]["username"] for x in results]
        assert list(dict.fromkeys(names)) == members
        orders.add(tuple(x["id"] for x in results))
    assert len(orders) > 1


def test_offset_paging_skips_and_repeats_files(oh176: OHServer) -> None:
    crawls = [crawl(oh176, "/api/public/datafiles/", limit=3) for _ in range(15)]
    assert all(len(ids) == 31 for ids in crawls)
    assert any(len(set(ids)) < 31 for ids in crawls)  # rssfed23 & co. straddle pages
    assert set().union(*crawls) <= set(oh176.file_ids())


def test_shuffle_off_and_seed(oh176: OHServer) -> None:
    oh176.shuffle = False
    a = crawl(oh176, "/api/public/datafiles/", limit=3)
    b = crawl(oh176, "/api/public/datafiles/", limit=3)
    assert a == b and len(set(a)) == 31


def test_path_listings(oh_server: OHServer) -> None:
    def ids(path: str) -> list[int]:
        return sorted(x["id"] for x in listing(oh_server, path)["results"])

    assert ids("/api/public/project/102/datafiles/") == [1, 2, 4, 6]
    page = listing(oh_server, "/api/public/project/128/datafiles/?limit=1")
    assert page["count"] == 2 and page["next"].endswith("/project/128/datafiles/?limit=1&offset=1")
    assert ids("/api/public/member/alice/datafiles/") == [1, 2, 3]
    assert ids("/api/public/member/carol/datafiles/") == []  # hidden membership
    assert ids("/api/public/member/dave/datafiles/") == []
    assert ids("/api/public/project/200/datafiles/") == []  # approved, no public data
    assert ids("/api/public/datatype/2/datafiles/") == [1, 2, 4, 6]
    assert ids("/api/public/datatype/3/datafiles/") == [3, 5]
    assert ids("/api/public/datatype/1/datafiles/?include_children=true") == [
        1,
        1,
        2,
        2,
        4,
        4,
        6,
        6,
    ]
    assert ids("/api/public/datatype/1/datafiles/?include_children=no") == [1, 2, 4, 6]
    assert ids("/api/public/datatype/4/datafiles/") == []
    assert ids("/api/public-data/") == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "path",
    [
        "/api/public/project/999/datafiles/",
        "/api/public/project/300/datafiles/",
        "/api/public/member/nobody/datafiles/",
        "/api/public/datatype/99/datafiles/",
        "/api/public/datatype/1/datafiles/?include_children=maybe",
        "/api/public/project/999/members",
    ],
)
def test_unknown_path_objects_give_html_500(oh_server: OHServer, path: str) -> None:
    oh_server.add_project(300, "Unapproved", approved=False)
    r = get(oh_server, path)
    assert r.status_code == 500
    assert r.headers["Content-Type"] == "text/html"
    assert r.text == "<h1>Server Error (500)</h1>"


def test_detail_endpoints(oh_server: OHServer) -> None:
    one = get(oh_server, "/api/public/datafile/1/").json()
    assert list(one) == FILE_KEYS and one["user"]["username"] == "alice"
    for missing in (
        "/api/public/datafile/7/",
        "/api/public/datafile/8/",
        "/api/public/datafile/99999/",
        "/api/public/project/999/",
        "/api/public/datatype/99/",
        "/api/public/member/nobody/",
    ):
        r = get(oh_server, missing)
        assert r.status_code == 404 and r.json() == {"detail": "Not found."}, missing
        assert r.headers["Content-Type"] == "application/json"
    assert get(oh_server, "/api/public/member/alice/").json() == {
        "name": "Alice Example",
        "profile_url": oh_server.base_url + "/member/alice/",
        "username": "alice",
    }
    assert get(oh_server, "/api/public/datatype/1/").json()["children"] == [2]


def test_projects_datatypes_members_like_samples(oh_server: OHServer) -> None:
    projects = listing(oh_server, "/api/public/projects/")
    assert [p["id"] for p in projects["results"]] == [128, 102, 200]
    project = get(oh_server, "/api/public/project/102/").json()
    assert project["authorized_members"] == 4 and project["id_label"] == "direct-sharing-102"
    assert project["registered_datatypes"] == ["/api/public/datatype/1/", "/api/public/datatype/2/"]
    datatypes = listing(oh_server, "/api/public/datatypes/")
    members = listing(oh_server, "/api/public/members/")
    assert [m["username"] for m in members["results"]] == [
        "alice",
        "bob_smith",
        "carol",
        "dave",
        "projcoordinator",
    ]
    if not (REFERENCE / "real-server").exists():
        return
    assert projects == reference_body("13_projects.txt")
    assert project == reference_body("14_project102.txt")
    assert datatypes == reference_body("15_datatypes.txt")
    expected = json.dumps(reference_body("18_members.txt"))
    assert members == json.loads(expected.replace("http://127.0.0.1:8795", oh_server.base_url))


def test_trailing_slash_quirk_and_append_slash(oh_server: OHServer) -> None:
    r = get(oh_server, "/api/public/project/102/datafiles")
    assert r.status_code == 200 and r.json()["name"] == "Fitbit Connection"
    assert "results" not in r.json()
    r = get(oh_server, "/api/public/datafiles?limit=2", allow_redirects=False)
    assert r.status_code == 301 and r.headers["Location"] == "/api/public/datafiles/?limit=2"
    assert get(oh_server, "/api/public/nothing/").status_code == 404


def test_crawler_user_agents_are_refused(oh_server: OHServer) -> None:
    for ua in ("Googlebot/2.1", "Mozilla/5.0 (compatible; bingbot/2.0)", "my-SPIDER", "crawler"):
        r = get(oh_server, "/api/public/datafiles/", headers={"User-Agent": ua})
        assert r.status_code == 403 and r.headers["Content-Type"].startswith("text/html")
    ua = "ohpub/0.1 (+https://example.org/ohpub)"
    assert get(oh_server, "/api/public/datafiles/", headers={"User-Agent": ua}).ok


def test_legacy_public_data_endpoint(oh_server: OHServer) -> None:
    page = listing(oh_server, "/api/public-data/?limit=4")
    assert page["count"] == 6 and page["next"].endswith("/api/public-data/?limit=4&offset=4")
    item = page["results"][0]
    keys = ["id", "basename", "created", "download_url", "metadata", "source", "user"]
    assert list(item) == keys
    assert item["source"] == "direct-sharing-102" or item["source"] == "direct-sharing-128"
    assert re.fullmatch(r"\d{8}", item["user"]["id"]) and item["user"]["username"] == "alice"
    hidden = [x for x in listing(oh_server, "/api/public-data/")["results"] if x["id"] == 6]
    assert hidden[0]["user"] == {"id": None, "name": None, "username": None}
    quirk = listing(oh_server, "/api/public-data/?username=carol")["results"]
    assert quirk.count({}) == 1 and len(quirk) == 6
    assert listing(oh_server, "/api/public-data/?username=xcarolx")["results"].count({}) == 0
    assert listing(oh_server, "/api/public-data/?source=direct-sharing-128")["count"] == 6


# --- keys and the download view --------------------------------------------------------------


def test_every_serialization_mints_a_reusable_key(oh_server: OHServer) -> None:
    a = get(oh_server, "/api/public/datafile/3/").json()["download_url"]
    b = get(oh_server, "/api/public/datafile/3/").json()["download_url"]
    assert a != b
    for url in (a, a, b):
        assert requests.get(url, allow_redirects=False, timeout=5).status_code == 302


def test_download_view_302(oh_server: OHServer) -> None:
    key = oh_server.mint_key(3)
    path = f"/data-management/datafile-download/3/?key={key}"
    before = int(oh_server.now())
    r = get(oh_server, path, allow_redirects=False)
    assert r.status_code == 302 and r.headers["Content-Length"] == "0"
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    loc = r.headers["Location"]
    m = re.fullmatch(
        re.escape(oh_server.storage_url)
        + r"/open-humans-local/member-files/direct-sharing-128/[0-9a-f-]{36}/ag-000001\.fastq\.gz"
        r"\?AWSAccessKeyId=AKIALOCALTESTING0000&Signature=[^&]+&Expires=(\d+)&x-oh-key=(.+)",
        loc,
    )
    assert m and m[2] == key
    assert before + 600 <= int(m[1]) <= before + 602
    head = requests.head(oh_server.url(path), timeout=5)
    assert head.status_code == 302 and head.headers["Location"].startswith(oh_server.storage_url)
    # same basename, different files, different objects
    loc1, loc2 = (location(oh_server, fid) for fid in (1, 2))
    assert loc1.split("?")[0] != loc2.split("?")[0]
    assert loc1.split("?")[0].endswith("/fitbit-data.json")


def test_download_view_403s(oh_server: OHServer) -> None:
    def status(file_id: int, key: str | None) -> tuple[int, str]:
        query = "" if key is None else f"?key={key}"
        r = get(
            oh_server,
            f"/data-management/datafile-download/{file_id}/{query}",
            allow_redirects=False,
        )
        return r.status_code, r.text

    not_authorized = (403, "<h1>You are not authorized to view this file.</h1>")
    unavailable = (403, "<h1>This file is unavailable.</h1>")
    assert status(3, oh_server.mint_key(1)) == not_authorized  # key of another file
    assert status(3, "00000000-0000-0000-0000-000000000000") == not_authorized
    assert status(3, None) == not_authorized
    assert status(99999, "00000000-0000-0000-0000-000000000000") == unavailable
    assert status(8, None) == unavailable  # incomplete upload
    key = oh_server.mint_key(5)
    oh_server.delete_file(5)
    assert status(5, key) == unavailable
    r = get(oh_server, "/data-management/datafile-download/3/")
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"


def test_keys_expire_after_key_ttl(oh_server: OHServer) -> None:
    key = oh_server.mint_key(3)
    url = oh_server.url(f"/data-management/datafile-download/3/?key={key}")
    oh_server.advance(3599)
    assert requests.get(url, allow_redirects=False, timeout=5).status_code == 302
    oh_server.advance(2)
    r = requests.get(url, allow_redirects=False, timeout=5)
    assert r.status_code == 403 and "not authorized" in r.text
    fresh = get(oh_server, "/api/public/datafile/3/").json()["download_url"]
    assert requests.get(fresh, allow_redirects=False, timeout=5).status_code == 302


def test_redirect_faults(oh_server: OHServer) -> None:
    oh_server.faults.redirect_location = "file:///etc/passwd"
    r = requests.get(oh_server.download_url(1), allow_redirects=False, timeout=5)
    assert r.headers["Location"] == "file:///etc/passwd"
    oh_server.faults.redirect_location = None
    oh_server.faults.redirect_hops = 3
    r = requests.get(oh_server.download_url(1), timeout=5)
    assert r.status_code == 200 and len(r.history) == 4
    assert r.content == oh_server.content(1)
    oh_server.faults.redirect_hops = 40
    with pytest.raises(requests.TooManyRedirects):
        requests.get(oh_server.download_url(1), timeout=5)


# --- storage ---------------------------------------------------------------------------------


def test_storage_object_headers_and_raw_gzip_bytes(oh_server: OHServer) -> None:
    r = requests.get(oh_server.download_url(3), stream=True, timeout=10)
    raw = r.raw.read(decode_content=False)
    assert r.status_code == 200 and len(raw) == 939_303 == int(r.headers["Content-Length"])
    assert r.headers["ETag"] == f'"{hashlib.md5(raw).hexdigest()}"' == oh_server.etag(3)
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["Last-Modified"] == "Fri, 01 Mar 2024 12:10:00 GMT"
    assert raw == oh_server.content(3)
    assert len(gzip.decompress(raw)) > len(raw)  # a decoding client writes a bigger file
    decoded = requests.get(oh_server.download_url(3), timeout=10).content
    assert decoded == gzip.decompress(raw)
    plain = requests.get(oh_server.download_url(1), timeout=10)
    assert "Content-Encoding" not in plain.headers and plain.content == oh_server.content(1)


def test_storage_ranges(oh_server: OHServer) -> None:
    url = location(oh_server, 3)
    data = oh_server.content(3)
    etag = oh_server.etag(3)

    def fetch(**headers: str) -> requests.Response:
        h = {"Accept-Encoding": "identity", **{k.replace("_", "-"): v for k, v in headers.items()}}
        r = requests.get(url, headers=h, stream=True, timeout=10)
        r._content = r.raw.read(decode_content=False)  # type: ignore[attr-defined]
        return r

    r = fetch(Range="bytes=0-99")
    assert r.status_code == 206 and r.content == data[:100]
    assert r.headers["Content-Range"] == "bytes 0-99/939303"
    r = fetch(Range="bytes=500000-")
    assert r.status_code == 206 and r.content == data[500000:]
    assert r.headers["Content-Range"] == "bytes 500000-939302/939303"
    assert fetch(Range="bytes=-10").content == data[-10:]
    assert fetch(Range="bytes=939000-2000000").content == data[939000:]
    r = fetch(Range="bytes=99999999-")
    assert r.status_code == 416 and r.headers["Content-Type"] == "application/xml"
    assert r.headers["Content-Range"] == "bytes */939303"
    assert b"<Code>InvalidRange</Code>" in r.content
    assert b"<ActualObjectSize>939303</ActualObjectSize>" in r.content
    r = fetch(Range="bytes=100-199", If_Range=etag)
    assert r.status_code == 206 and r.content == data[100:200]
    r = fetch(Range="bytes=100-199", If_Range='"0123456789abcdef0123456789abcdef"')
    assert r.status_code == 200 and r.content == data
    r = fetch(Range="bytes=100-199", If_Range="Fri, 01 Mar 2024 12:10:00 GMT")
    assert r.status_code == 206
    assert fetch(Range="bytes=0-1,5-6").status_code == 200  # multi-range: whole object


def test_storage_refuses_bad_expired_and_head(oh_server: OHServer) -> None:
    url = location(oh_server, 1)
    assert requests.get(url, timeout=5).status_code == 200
    assert requests.head(url, timeout=5).status_code == 403
    tampered = re.sub(r"Signature=[^&]+", "Signature=AAAA", url)
    r = requests.get(tampered, timeout=5)
    assert r.status_code == 403 and r.headers["Content-Type"] == "application/xml"
    assert b"<Error><Code>SignatureDoesNotMatch</Code>" in r.content
    later = re.sub(r"Expires=\d+", "Expires=9999999999", url)
    assert requests.get(later, timeout=5).status_code == 403
    assert requests.get(url.split("?")[0], timeout=5).status_code == 403
    oh_server.advance(601)
    r = requests.get(url, timeout=5)
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content
    assert b"Request has expired" in r.content


def test_storage_missing_and_deleted_objects(oh_server: OHServer) -> None:
    url4 = location(oh_server, 4)
    oh_server.storage_missing.add(1)
    r = requests.get(oh_server.download_url(1), timeout=5)
    assert r.status_code == 404 and b"<Code>NoSuchKey</Code>" in r.content
    oh_server.delete_file(4)
    assert requests.get(url4, timeout=5).status_code == 404


def test_multipart_etag(oh_server: OHServer) -> None:
    fid = oh_server.add_file(
        basename="big.bin",
        content=SyntheticContent(10_000, 1),
        project_id=102,
        username="alice",
        multipart=True,
    )
    r = requests.get(oh_server.download_url(fid), timeout=5)
    assert re.fullmatch(r'"[0-9a-f]{32}-2"', r.headers["ETag"])
    assert hashlib.md5(r.content).hexdigest() not in r.headers["ETag"]


# --- faults ----------------------------------------------------------------------------------


def test_fault_script_api_download_storage(oh_server: OHServer) -> None:
    oh_server.faults.script(role="api", path_regex=r"/datafiles/", statuses=[503, 502])
    assert get(oh_server, "/api/public/projects/").status_code == 200  # no match
    r = get(oh_server, "/api/public/datafiles/")
    assert r.status_code == 503 and r.headers["Content-Type"].startswith("text/html")
    assert get(oh_server, "/api/public/datafiles/").status_code == 502
    assert get(oh_server, "/api/public/datafiles/").status_code == 200
    oh_server.faults.script(role="download", statuses=[429], retry_after=2)
    r = requests.get(oh_server.download_url(1), allow_redirects=False, timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    oh_server.faults.script(role="storage", statuses=[500, 503])
    url = oh_server.download_url(1)
    assert requests.get(url, timeout=5).status_code == 500
    r = requests.get(url, timeout=5)
    assert r.status_code == 503 and r.headers["Content-Type"] == "application/xml"
    assert requests.get(url, timeout=5).status_code == 200


def test_fault_latency_and_in_flight(oh_server: OHServer) -> None:
    oh_server.faults.latency["api"] = 0.2
    oh_server.max_in_flight_reset()

    def one() -> None:
        get(oh_server, "/api/public/projects/")

    threads = [threading.Thread(target=one) for _ in range(4)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 0.2 <= time.perf_counter() - t0 < 1.5
    assert oh_server.peak_in_flight["api"] == 4 and oh_server.in_flight["api"] == 0
    assert oh_server.count(role="api", path_prefix="/api/public/projects/", method="GET") == 4
    entry = oh_server.log[-1]
    assert entry.status == 200 and entry.end - entry.start >= 0.2 and entry.bytes_sent > 0
    oh_server.clear_log()
    assert oh_server.count() == 0


def test_fault_bandwidth() -> None:
    with OHServer() as server:
        server.load_sample()
        fid = server.add_file(
            basename="x.bin", content=SyntheticContent(60_000, 2), project_id=102, username="alice"
        )
        server.faults.bandwidth = 200_000
        t0 = time.perf_counter()
        r = requests.get(server.download_url(fid), timeout=10)
        assert r.content == server.content(fid)
        assert time.perf_counter() - t0 >= 0.25


def test_fault_reset_after(oh_server: OHServer) -> None:
    oh_server.faults.reset_after[3] = (1000, 1)
    r = requests.get(oh_server.download_url(3), stream=True, timeout=5)
    got = b""
    with pytest.raises(urllib3.exceptions.ProtocolError, match="reset"):
        for chunk in r.raw.stream(65536, decode_content=False):
            got += chunk
    assert len(got) <= 1000
    assert 3 not in oh_server.faults.reset_after
    r = requests.get(oh_server.download_url(3), stream=True, timeout=5)
    assert r.raw.read(decode_content=False) == oh_server.content(3)
    storage = [e for e in oh_server.log if e.role == "storage"]
    assert storage[0].bytes_sent == 1000 and storage[1].bytes_sent == 939_303


def test_fault_truncate_after(oh_server: OHServer) -> None:
    oh_server.faults.truncate_after[1] = (500, 2)
    for _ in range(2):
        r = requests.get(oh_server.download_url(1), stream=True, timeout=5)
        assert int(r.headers["Content-Length"]) == oh_server.file(1).size
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            r.content  # noqa: B018
    assert requests.get(oh_server.download_url(1), timeout=5).content == oh_server.content(1)


def test_fault_stall(oh_server: OHServer) -> None:
    oh_server.faults.stall[1] = (100, 0.6, 1)
    r = requests.get(oh_server.download_url(1), stream=True, timeout=(5, 0.2))
    with pytest.raises(requests.exceptions.ConnectionError):
        r.content  # noqa: B018
    oh_server.faults.stall[1] = (100, 0.3, 1)
    t0 = time.perf_counter()
    r = requests.get(oh_server.download_url(1), timeout=5)
    assert r.content == oh_server.content(1) and time.perf_counter() - t0 >= 0.3


def test_fault_ignore_range_and_corrupt(oh_server: OHServer) -> None:
    oh_server.faults.ignore_range = True
    r = requests.get(oh_server.download_url(1), headers={"Range": "bytes=10-"}, timeout=5)
    assert r.status_code == 200 and r.content == oh_server.content(1)
    oh_server.faults.ignore_range = False
    oh_server.faults.corrupt.add(1)
    r = requests.get(oh_server.download_url(1), timeout=5)
    assert r.headers["ETag"] == f'"{oh_server.md5(1)}"'
    assert hashlib.md5(r.content).hexdigest() != oh_server.md5(1)
    assert len(r.content) == oh_server.file(1).size
    diff = [
        i for i, (a, b) in enumerate(zip(r.content, oh_server.content(1), strict=True)) if a != b
    ]
    assert diff == [oh_server.file(1).size // 2]


def test_listing_faults(oh_server: OHServer) -> None:
    faults = oh_server.faults
    faults.listing("html", times=1)
    r = get(oh_server, "/api/public/datafiles/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert get(oh_server, "/api/public/datafiles/").headers["Content-Type"] == "application/json"
    faults.listing("truncated_json", times=1)
    with pytest.raises(ValueError):
        get(oh_server, "/api/public/datafiles/").json()
    faults.listing("loop_next", times=1)
    page = get(oh_server, "/api/public/datafiles/?limit=2").json()
    assert page["next"] == oh_server.url("/api/public/datafiles/?limit=2")
    faults.listing("500", times=2, path_regex="offset=2")
    assert get(oh_server, "/api/public/datafiles/?limit=2").status_code == 200
    assert get(oh_server, "/api/public/datafiles/?limit=2&offset=2").status_code == 500
    assert get(oh_server, "/api/public/project/102/datafiles/?limit=2&offset=2").status_code == 500
    assert get(oh_server, "/api/public/datafiles/?limit=2&offset=2").status_code == 200
    faults.listing("huge_page", times=1)
    r = get(oh_server, "/api/public/datafiles/")
    assert len(r.content) > 50_000_000 and r.json()["count"] == 6
    faults.listing("500")
    assert get(oh_server, "/api/public/projects/").status_code == 500
    faults.clear()
    assert get(oh_server, "/api/public/projects/").status_code == 200


# --- changing data ---------------------------------------------------------------------------


def test_add_delete_replace(oh_server: OHServer) -> None:
    fid = oh_server.add_file(
        basename="new file.json",
        content=b"{}",
        project_id=128,
        username="bob_smith",
        datatype_ids=[3],
    )
    assert fid == 9
    item = get(oh_server, f"/api/public/datafile/{fid}/").json()
    assert item["created"] == "2024-03-01T13:31:00Z"  # one minute after the newest (file 2)
    r = requests.get(item["download_url"], timeout=5)
    assert r.content == b"{}" and "/new%20file.json?" in r.url
    new = oh_server.replace_file(fid, b'{"v": 2}')
    assert get(oh_server, f"/api/public/datafile/{fid}/").status_code == 404
    item2 = get(oh_server, f"/api/public/datafile/{new}/").json()
    assert item2["basename"] == "new file.json" and item2["created"] > item["created"]
    with pytest.raises(ValueError):
        oh_server.add_file(id=fid, basename="x", content=b"", project_id=128, username="alice")
    with pytest.raises(ValueError):
        oh_server.add_file(basename="x", content=b"", project_id=128, username=None)  # type: ignore[arg-type]
    assert listing(oh_server, "/api/public/datafiles/")["count"] == 7


def test_hide_and_stop_sharing(oh_server: OHServer) -> None:
    oh_server.hide_membership("alice", 102)
    users = {
        x["id"]: x["user"]["username"]
        for x in listing(oh_server, "/api/public/datafiles/")["results"]
    }
    assert users[1] is None and users[3] == "alice"
    assert sorted(
        x["id"] for x in listing(oh_server, "/api/public/member/alice/datafiles/")["results"]
    ) == [3]
    oh_server.unhide_membership("alice", 102)
    old = get(oh_server, "/api/public/datafile/1/").json()
    oh_server.stop_sharing("alice")
    assert listing(oh_server, "/api/public/datafiles/")["count"] == 3
    assert get(oh_server, "/api/public/datafile/1/").status_code == 404
    assert listing(oh_server, "/api/public/member/alice/datafiles/")["count"] == 0
    # a key minted before still redirects, as in the real download view
    assert requests.get(old["download_url"], allow_redirects=False, timeout=5).status_code == 302
    oh_server.start_sharing("alice")
    again = get(oh_server, "/api/public/datafile/1/").json()
    assert (
        again["created"] == old["created"]
        and listing(oh_server, "/api/public/datafiles/")["count"] == 6
    )


def test_project176_matches_reference(oh176: OHServer) -> None:
    page = listing(oh176, "/api/public/project/176/datafiles/")
    assert page["count"] == 31 and page["next"] is None
    assert get(oh176, "/api/public/datatype/14/").json()["source_projects"] == [
        "/api/public/project/176/"
    ]
    assert get(oh176, "/api/public/project/176/").json()["name"] == "Spotify"
    sizes = [oh176.file(i).size for i in oh176.file_ids()]
    assert min(sizes) >= 3_000 and max(sizes) <= 100_000
    path = REFERENCE / "project-176-datafiles.json"
    if not path.exists():
        pytest.skip("reference samples not available")
    real = json.loads(path.read_text())["results"]

    def norm(item: dict, base: str) -> dict:
        item = {k: v for k, v in item.items() if k != "download_url"}
        return json.loads(json.dumps(item).replace(base, "BASE"))

    ours = {x["id"]: norm(x, oh176.base_url) for x in page["results"]}
    assert ours == {x["id"]: norm(x, "https://www.openhumans.org") for x in real}
    assert [x["user"]["username"] for x in page["results"]] == [x["user"]["username"] for x in real]


def test_synthetic_content() -> None:
    big = SyntheticContent(1 << 30, seed=7)
    tail = big.read((1 << 30) - 5000, 1 << 30)
    assert len(tail) == 5000
    assert b"".join(big.iter_range(1000, 3_000_000, chunk=65536)) == big.read(1000, 3_000_000)
    small = SyntheticContent(200_000, seed=1)
    assert small.md5_hex() == hashlib.md5(small.read()).hexdigest()
    assert SyntheticContent(200_000, seed=2).read() != small.read()
    assert SyntheticContent(0).read() == b""


def test_generate_and_count() -> None:
    with OHServer() as server:
        t0 = time.perf_counter()
        ids = server.generate(2000, 40, 100, 5000, hidden_fraction=0.2)
        assert time.perf_counter() - t0 < 1.0
        page = listing(server, "/api/public/datafiles/?limit=2000")
        assert page["count"] == 2000 and {x["id"] for x in page["results"]} == set(ids)
        assert any(x["user"]["id"] is None for x in page["results"])
        r = requests.get(page["results"][0]["download_url"], timeout=5)
        assert 100 <= len(r.content) <= 5000


# --- command line ----------------------------------------------------------------------------


def test_command_line_runs_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ohserver", "--port", "0", "--project176"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.fullmatch(r"OHPUB_BASE_URL=(http://127\.0\.0\.1:\d+)\n", line)
        assert m, line
        r = requests.get(m[1] + "/api/public/datafiles/", timeout=5)
        assert r.json()["count"] == 31
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()


def test_query_parsing_helpers(oh_server: OHServer) -> None:
    # the request log keeps the parsed query and lower-case headers
    get(oh_server, "/api/public/datafiles/?limit=3&limit=4", headers={"X-Test": "1"})
    entry = oh_server.log[-1]
    assert entry.query == {"limit": "4"} and entry.headers["x-test"] == "1"
    assert parse_qs(urlsplit(oh_server.signed_url(1)).query)["AWSAccessKeyId"] == [
        "AKIALOCALTESTING0000"
    ]


# --- content that matches its name -------------------------------------------------------------


def test_project176_files_are_json_like_their_names(oh176: OHServer) -> None:
    for fid in oh176.file_ids():
        f = oh176.file(fid)
        assert f.size == random.Random(fid).randint(3_000, 100_000)  # sizes as before
        data = requests.get(oh176.download_url(fid), timeout=5).content
        assert data == oh176.content(fid)
        records = json.loads(data)
        assert isinstance(records, list) and len(records) >= 5
        if f.basename == "spotify-listening-archive.json":
            assert all({"played_at", "ms_played", "track"} <= set(r) for r in records)
        else:
            assert all({"id", "name", "artists", "audio_features"} <= set(r) for r in records)
    with OHServer().load_project176() as again:  # deterministic per id, and files differ
        assert [again.md5(i) for i in again.file_ids()] == [oh176.md5(i) for i in oh176.file_ids()]
    assert len({oh176.md5(i) for i in oh176.file_ids()}) == 31


def test_generated_json_and_csv_parse() -> None:
    with OHServer() as server:
        ids = server.generate(60, 5, 50, 20_000, seed=3)
        seen = set()
        for fid in ids:
            f = server.file(fid)
            data = server.content(fid)
            assert len(data) == f.size
            if f.basename == "data.json":
                assert isinstance(json.loads(data), list)
            elif f.basename == "export.csv":
                rows = list(csv.reader(io.StringIO(data.decode())))
                if f.size > 200:
                    assert rows[0] == ["date", "steps", "resting_heart_rate", "sleep_minutes"]
                    assert all(len(row) == 4 and int(row[1]) > 0 for row in rows[1:])
            seen.add(f.basename)
        assert {"data.json", "export.csv"} <= seen


@pytest.mark.parametrize(
    "name", ["a.json", "spotify-listening-archive.json", "b.csv", "c.json.gz", "r.fastq.gz", "n.gz"]
)
def test_named_content_is_valid_at_every_size(name: str) -> None:
    sizes = [0, 1, 2, 20, 21, 22, 60, 200, 999, 4_096, 65_600, 300_000, 1_300_007]
    for size in sizes:
        content = named_content(name, size, seed=size + 1)
        data = content.read()
        assert len(data) == size == content.size
        assert data == named_content(name, size, seed=size + 1).read()  # deterministic
        assert b"".join(content.iter_range(7, size, 1000)) == data[7:]
        assert content.md5_hex() == hashlib.md5(data).hexdigest()
        if name.endswith(".gz"):
            if size >= 21:  # the smallest gzip stream
                text = gzip.decompress(data)
                if size >= 4_096:
                    assert len(text) > size  # really compressed
                if name.endswith(".json.gz") and size >= 999:
                    assert isinstance(json.loads(text), list)
        elif name.endswith(".json"):
            if size:
                assert json.loads(data) is not None
        elif size:
            rows = list(csv.reader(io.StringIO(data.decode())))
            assert rows and rows[0]
    assert named_content("x.bin", 5000, 1).read() == SyntheticContent(5000, 1).read()
    assert named_content(name, 5000, 1).read() != named_content(name, 5000, 2).read()


def test_gz_file_is_served_as_stored_gzip(oh_server: OHServer) -> None:
    fid = oh_server.add_file(
        basename="export.csv.gz",
        content=named_content("export.csv.gz", 50_000, seed=4),
        project_id=102,
        username="alice",
    )
    r = requests.get(oh_server.download_url(fid), stream=True, timeout=5)
    raw = r.raw.read(decode_content=False)
    assert r.headers["Content-Encoding"] == "gzip" and raw == oh_server.content(fid)
    rows = list(csv.reader(io.StringIO(gzip.decompress(raw).decode())))
    assert rows[0] == ["date", "steps", "resting_heart_rate", "sleep_minutes"]
    assert gzip.decompress(oh_server.content(3)).startswith(b"@AG0000001 ")  # the sample's


def test_explicit_content_is_stored_exactly(oh_server: OHServer) -> None:
    fid = oh_server.add_file(
        basename="x.json", content=b"not json", project_id=102, username="alice"
    )
    assert oh_server.content(fid) == b"not json"
    assert requests.get(oh_server.download_url(fid), timeout=5).content == b"not json"
    synthetic = SyntheticContent(3000, seed=9)
    fid = oh_server.add_file(basename="y.csv", content=synthetic, project_id=102, username="alice")
    assert oh_server.file(fid).content is synthetic
    assert oh_server.content(fid) == synthetic.read()


# --- capacity model --------------------------------------------------------------------------


def capacity_server(n_files: int = 1000) -> OHServer:
    server = OHServer().start()
    server.generate(n_files, 8, 10, 10)
    return server


def timed(server: OHServer, path: str) -> tuple[requests.Response, float]:
    t0 = time.perf_counter()
    r = requests.get(server.url(path), timeout=30)
    return r, time.perf_counter() - t0


def test_capacity_is_off_by_default_and_listings_are_logged() -> None:
    with OHServer().load_sample() as server:
        assert server.capacity is None
        listing(server, "/api/public/datafiles/?limit=4&offset=1")
        listing(server, "/api/public/projects/")
        listing(server, "/api/public/datafile/1/")
        for path in (
            "/api/public/project/102/datafiles/",
            "/api/public/member/alice/datafiles/?limit=zz",
            "/api/public/datatype/1/datafiles/?include_children=true",
            "/api/public-data/",
        ):
            listing(server, path)
        got = [
            (e.listing.view, e.listing.limit, e.listing.offset, e.listing.records)
            for e in server.listings()
            if e.listing is not None
        ]
        assert got == [
            ("datafiles", 4, 1, 4),
            ("project_datafiles", 100, 0, 4),
            ("member_datafiles", 100, 0, 3),
            ("datatype_datafiles", 100, 0, 8),
            ("legacy", 100, 0, 6),
        ]
        assert all(e.listing.outcome == "ok" and e.listing.service == 0 for e in server.listings())
        stats = server.listing_stats()
        assert (stats.requests, stats.timeouts, stats.records_served) == (5, 0, 25)
        server.faults.listing("500", times=1)
        assert get(server, "/api/public/datafiles/").status_code == 500
        assert server.listings()[-1].listing.outcome == "fault"  # type: ignore[union-attr]


def test_capacity_cost_grows_with_the_page_and_the_timeout_is_an_html_500() -> None:
    server = capacity_server()
    try:
        server.capacity = Capacity(per_record=0.001, cores=2, timeout=0.4)
        assert server.capacity.records_alone() == 399
        real = Capacity.scaled(1.0)
        assert (real.per_record, real.timeout, real.records_alone()) == (0.008, 30.0, 3749)
        assert Capacity.scaled(1 / 20).timeout == pytest.approx(Capacity().timeout)
        durations = []
        for n in (5, 100, 200):
            r, seconds = timed(server, f"/api/public/datafiles/?limit={n}")
            assert r.status_code == 200 and len(r.json()["results"]) == n
            durations.append(seconds)
        assert durations == sorted(durations)  # about n x per_record each
        r, slow = timed(server, "/api/public/datafiles/?limit=600&offset=100")
        assert r.status_code == 500
        assert r.headers["Content-Type"].startswith("text/html")
        assert r.text.startswith("<!DOCTYPE html>") and "500 Internal Server Error" in r.text
        assert slow > durations[-1]
        entry = server.log[-1]
        assert entry.status == 500 and entry.listing is not None
        assert (entry.listing.outcome, entry.listing.records) == ("timeout", 600)
        assert entry.listing.service < server.capacity.cost(600)
        # the same request again, unchanged: counted as a repeat; a smaller one is not
        assert get(server, "/api/public/datafiles/?limit=600&offset=100").status_code == 500
        assert get(server, "/api/public/datafiles/?limit=200&offset=100").status_code == 200
        stats = server.listing_stats()
        assert stats == ListingStats(
            requests=6,
            timeouts=2,
            records_served=5 + 100 + 200 + 200,
            records_timed_out=1200,
            repeated_timeouts=1,
        )
        assert server.listing_stats("/api/public/project/").requests == 0
        assert server.errors == []
    finally:
        server.stop()


def test_capacity_parallel_requests_share_the_cores() -> None:
    server = capacity_server(1300)
    try:
        # 320 records need 0.64 s of CPU: alone in time, four at once on two cores need 1.28 s
        server.capacity = Capacity(per_record=0.002, cores=2, timeout=1.0)
        assert get(server, "/api/public/datafiles/?limit=320").status_code == 200
        barrier = threading.Barrier(4)
        statuses: dict[int, int] = {}

        def page(i: int) -> None:
            barrier.wait()
            statuses[i] = get(
                server, f"/api/public/datafiles/?limit=320&offset={320 * i}"
            ).status_code

        threads = [threading.Thread(target=page, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == {0: 500, 1: 500, 2: 500, 3: 500}
        assert server._cpu.peak == 4
        stats = server.listing_stats()
        assert (stats.requests, stats.timeouts, stats.records_timed_out) == (5, 4, 1280)
        assert stats.repeated_timeouts == 0  # four different pages, each sent once
        # with four cores the same four pages all answer
        server.capacity.cores = 4
        threads = [threading.Thread(target=page, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == {0: 200, 1: 200, 2: 200, 3: 200}
    finally:
        server.stop()


def test_capacity_keeps_same_ties_order() -> None:
    def walk(server: OHServer) -> list[int]:
        return crawl(server, "/api/public/project/300/datafiles/", limit=70)

    with OHServer(seed=5) as server:
        server.generate(300, 3, 10, 10)  # about 100 files per member: pages cut members
        server.same_ties = True
        plain = walk(server)
        server.capacity = Capacity(per_record=0.001, cores=2, timeout=0.25)
        first = walk(server)
        assert get(server, "/api/public/datafiles/?limit=300").status_code == 500  # a timeout
        second = walk(server)
        assert plain == first == second
        assert len(set(first)) < 300  # the same files lost on every walk
        assert server.listing_stats().timeouts == 1


def test_capacity_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ohserver_main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--capacity", "--per-record", "--per-request", "--cores", "--router-timeout"):
        assert flag in text
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.ohserver",
            "--port",
            "0",
            "--generate",
            "200",
            "--per-record",
            "0.01",
            "--router-timeout",
            "0.5",
            "--same-ties",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        m = re.fullmatch(r"OHPUB_BASE_URL=(http://\S+)\n", proc.stdout.readline())
        assert m
        proc.stdout.readline()
        assert "capacity 10 ms/record" in proc.stdout.readline()
        assert requests.get(m[1] + "/api/public/datafiles/?limit=5", timeout=5).status_code == 200
        r = requests.get(m[1] + "/api/public/datafiles/?limit=200", timeout=5)
        assert r.status_code == 500 and r.headers["Content-Type"].startswith("text/html")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()


def test_capacity_stop_ends_requests_waiting_for_cpu() -> None:
    server = capacity_server(200)
    server.capacity = Capacity(per_record=1.0, cores=1, timeout=600)
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            get(server, "/api/public/datafiles/?limit=200")
        except requests.RequestException as exc:
            errors.append(exc)

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 10
    while server._cpu.jobs == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server._cpu.jobs == 1
    server.stop()
    t.join(10)
    assert not t.is_alive() and len(errors) == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("ohserver")]
    assert server._cpu.jobs == 0
