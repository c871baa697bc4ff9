"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ohserver import OHServer
from tests.s3server import S3Server, moto_available

# ---------------------------------------------------------------------------------------------
# Local Open Humans server fixtures (tests/ohserver.py) -- BEGIN
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def oh_server() -> Iterator[OHServer]:
    """A started server with the data of the real-server transcripts: projects 102 (Fitbit
    Connection), 128 (American Gut), 200 (no public data); datatypes 1-4; members alice,
    bob_smith, carol (hidden in 102), dave, projcoordinator; listed files 1-6 (1 and 2: alice's
    two fitbit-data.json, 3: a 939,303-byte .fastq.gz, 6: carol's, null user); unlisted file 7
    (project 200) and file 8 (incomplete upload)."""
    with OHServer().load_sample() as server:
        yield server
    _no_server_errors(server)


@pytest.fixture
def oh176() -> Iterator[OHServer]:
    """A started server holding the real project-176 (Spotify) listing: 31 files, 10 members,
    datatype 14; content is synthetic, 3-100 KB per file, deterministic per id."""
    with OHServer().load_project176() as server:
        yield server
    _no_server_errors(server)


@pytest.fixture
def oh_tls(monkeypatch: pytest.MonkeyPatch) -> Iterator[OHServer]:
    """Like ``oh_server``, served over HTTPS on both the site and the storage ports, with a
    CA made for the test (``server.ca_bundle``). The client trusts it the standard way:
    ``REQUESTS_CA_BUNDLE`` is set for the test, so in-process runs and child processes
    alike use it; a test that wants an untrusted client deletes it."""
    with OHServer(tls=True).load_sample() as server:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_bundle)
        yield server
    _no_server_errors(server)


def _no_server_errors(server: OHServer) -> None:
    """A bug inside the test server must not hide behind a client-side failure."""
    if server.errors:
        pytest.fail("exception inside the test server:\n" + "\n".join(server.errors))


# ---------------------------------------------------------------------------------------------
# Local Open Humans server fixtures -- END
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Local S3 server fixtures (tests/s3server.py: moto in a child process) -- BEGIN
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server_session() -> Iterator[S3Server]:
    """One S3 server (moto's server mode in a child process on 127.0.0.1) for the session;
    skips when moto's server extra is not installed (``pip install 'moto[server]'``)."""
    if not moto_available():
        pytest.skip("moto's server mode is not installed: pip install 'moto[server]'")
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_server(s3_server_session: S3Server, request: pytest.FixtureRequest) -> S3Server:
    """The session's S3 server with request counts reset and a fresh bucket for this test,
    named in ``s3_server.bucket`` (buckets are never reused across tests)."""
    server = s3_server_session
    _s3_bucket_seq[0] += 1
    bucket = f"t{_s3_bucket_seq[0]:04d}-{request.node.name.lower()}"[:63]
    bucket = "".join(c if c.isalnum() or c == "-" else "-" for c in bucket).rstrip("-")
    server.create_bucket(bucket)
    server.bucket = bucket
    server.reset_counts()
    return server


_s3_bucket_seq = [0]

# ---------------------------------------------------------------------------------------------
# Local S3 server fixtures -- END
# ---------------------------------------------------------------------------------------------
