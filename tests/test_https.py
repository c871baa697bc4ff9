"""The core paths over HTTPS (issue 13): Open Humans and its storage are HTTPS only.

The local server (``OHServer(tls=True)``, fixture ``oh_tls``) serves both the site and the
storage over TLS with a certificate from a CA made for the test; the client trusts it the
way a user behind an institution's TLS proxy would, through ``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import (
    FAST_RETRY,
    REPO,
    add_big_file,
    content_of,
    jsonl,
    run_cli,
    start_mirror,
    tree,
)


def _storage_gets(server: Any, since: float = 0.0) -> list[Any]:
    return [e for e in server.log if e.role == "storage" and e.method == "GET" and e.start >= since]


def test_server_speaks_only_tls_on_both_roles(oh_tls: Any) -> None:
    assert oh_tls.base_url.startswith("https://")
    assert oh_tls.storage_url.startswith("https://")
    page = requests.get(oh_tls.api_url + "datafiles/?limit=2", timeout=10).json()
    assert page["next"].startswith(oh_tls.base_url + "/")  # next links keep the scheme
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(oh_tls.api_url.replace("https://", "http://"), timeout=10)


def test_mirror_over_https_has_the_servers_bytes(oh_tls: Any, tmp_path: Path) -> None:
    res = run_cli(oh_tls, ["mirror", str(tmp_path), "-f", "jsonl"])
    assert res.code == 0, res.stderr
    listed = oh_tls.file_ids(public_only=True)
    files = tree(tmp_path)
    got = sorted(hashlib.sha256(b).hexdigest() for b in files.values())
    assert got == sorted(hashlib.sha256(content_of(oh_tls, i)).hexdigest() for i in listed)
    assert {r["status"] for r in jsonl(res.stdout)} == {"downloaded"}
    assert len(_storage_gets(oh_tls)) == len(listed)
    ver = run_cli(oh_tls, ["verify", str(tmp_path), "-f", "jsonl"])
    assert ver.code == 0, ver.stderr
    assert {r["status"] for r in jsonl(ver.stdout)} == {"ok"}


def test_gz_served_with_content_encoding_lands_raw_over_https(oh_tls: Any, tmp_path: Path) -> None:
    res = run_cli(oh_tls, ["mirror", str(tmp_path), "-p", "128"])
    assert res.code == 0, res.stderr
    data = (tmp_path / "alice/128/ag-000001.fastq.gz").read_bytes()
    assert data == content_of(oh_tls, 3)  # not decoded
    assert data[:2] == b"\x1f\x8b"
    with requests.get(oh_tls.signed_url(3), stream=True, timeout=10) as served:
        assert served.headers["Content-Encoding"] == "gzip"  # what made it a trap


def test_fetch_to_stdout_over_https(oh_tls: Any) -> None:
    res = run_cli(oh_tls, ["fetch", "3", "-o", "-"])
    assert res.code == 0, res.stderr
    assert res.stdout_bytes == content_of(oh_tls, 3)


def test_kill_9_mid_file_over_https_resumes_with_range(oh_tls: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_tls, 8_000_000)
    oh_tls.faults.bandwidth = 2_000_000
    part = tmp_path / ".ohpub" / "partial" / str(fid)
    proc = start_mirror(oh_tls, tmp_path, "-p", "600")  # inherits REQUESTS_CA_BUNDLE
    try:
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size >= 1_000_000):
            assert time.monotonic() < deadline, "the download never got going"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        got = part.stat().st_size
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert not (tmp_path / "alice/600/big.bin").exists()
    oh_tls.faults.bandwidth = None
    t0 = time.time()
    res = run_cli(oh_tls, ["mirror", str(tmp_path), "-p", "600", "-f", "jsonl"], env=FAST_RETRY)
    assert res.code == 0, res.stderr
    assert jsonl(res.stdout)[0]["status"] == "resumed"
    gets = _storage_gets(oh_tls, t0)
    assert len(gets) == 1
    assert int(gets[0].headers["range"].split("=")[1].rstrip("-")) >= got
    assert gets[0].bytes_sent <= 8_000_000 - got
    data = (tmp_path / "alice/600/big.bin").read_bytes()
    assert data == content_of(oh_tls, fid)
    assert not part.exists()


def test_tls_connection_reset_mid_body_resumes_within_the_run(oh_tls: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_tls, 3_000_000)
    oh_tls.faults.reset_after[fid] = (1_000_000, 2)  # TCP RST under the TLS stream, twice
    res = run_cli(oh_tls, ["mirror", str(tmp_path), "-p", "600"], env=FAST_RETRY)
    assert res.code == 0, res.stderr
    assert (tmp_path / "alice/600/big.bin").read_bytes() == content_of(oh_tls, fid)
    ranges = [e.headers.get("range") for e in _storage_gets(oh_tls)]
    assert len(ranges) == 3 and ranges[0] is None
    assert all(r and r.startswith("bytes=") for r in ranges[1:])


@pytest.mark.parametrize(
    "args", [["fetch", "3", "-o", "-"], ["list"], ["mirror", "{dest}"]], ids=lambda a: a[0]
)
def test_untrusted_certificate_is_one_clear_error(
    oh_tls: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    argv = [a.format(dest=tmp_path / "m") for a in args]
    res = run_cli(oh_tls, argv, env=FAST_RETRY)
    assert res.code == 1, res.stdout + res.stderr
    assert res.stdout_bytes == b""
    errors = [line for line in res.stderr.splitlines() if line.startswith("ohpub: error:")]
    assert len(errors) == 1, res.stderr
    low = errors[0].lower()
    assert "tls" in low or "certificate" in low, errors[0]
    assert "Traceback" not in res.stderr
    assert oh_tls.log == []  # no request got past the handshake


def test_foreground_tls_server_prints_the_ca_to_trust(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ohserver", "--tls", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(2))
        base, ca = lines["OHPUB_BASE_URL"], lines["REQUESTS_CA_BUNDLE"]
        assert base.startswith("https://")
        assert Path(ca).read_text().startswith("-----BEGIN CERTIFICATE-----")
        page = requests.get(base + "/api/public/datafiles/", verify=ca, timeout=10).json()
        assert page["count"] >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert not Path(ca).exists()  # the CA goes away with the server
