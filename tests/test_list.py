"""`ohpub list` and the API layer against the local Open Humans server."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ohpub.model.config import RetryPolicy
from ohpub.model.errors import NotFoundError, ServerError
from ohpub.model.filters import FileFilter
from ohpub.remote.client import ApiClient as Client
from ohpub.remote.listing import ListingReport
from tests.helpers import jsonl, run_cli

REPO = Path(__file__).resolve().parent.parent


# -- filters go into the path, and are checked on every record ------------------------------


def test_list_project_returns_only_that_project(oh_server: Any) -> None:
    res = run_cli(oh_server, ["list", "--project", "102"])
    assert res.code == 0, res.stderr
    recs = jsonl(res.stdout)
    assert sorted(r["id"] for r in recs) == [1, 2, 4, 6]
    assert {r["project_id"] for r in recs} == {102}
    paths = [e.path for e in oh_server.log if e.role == "api"]
    assert any(p.startswith("/api/public/project/102/datafiles/") for p in paths)
    assert not any(p == "/api/public/datafiles/" for p in paths)


def test_server_ignores_query_filters_but_ohpub_does_not(oh_server: Any) -> None:
    # The server answers the full list for a query filter; the path endpoint is what works.
    import requests

    r = requests.get(f"{oh_server.base_url}/api/public/datafiles/?source_project_id=128")
    assert r.json()["count"] == 6
    res = run_cli(oh_server, ["list", "--project", "128"])
    assert sorted(r["id"] for r in jsonl(res.stdout)) == [3, 5]


def test_filters_combine_and_within_or_across(oh_server: Any) -> None:
    both = jsonl(run_cli(oh_server, ["list", "-p", "102", "-p", "128"]).stdout)
    assert sorted(r["id"] for r in both) == [1, 2, 3, 4, 5, 6]
    anded = jsonl(run_cli(oh_server, ["list", "-p", "102", "-u", "alice"]).stdout)
    assert sorted(r["id"] for r in anded) == [1, 2]
    named = jsonl(run_cli(oh_server, ["list", "--name", "*.gz"]).stdout)
    assert [r["id"] for r in named] == [3]
    tagged = jsonl(run_cli(oh_server, ["list", "--tag", "american-gut"]).stdout)
    assert sorted(r["id"] for r in tagged) == [3, 5]
    typed = jsonl(run_cli(oh_server, ["list", "--datatype", "3"]).stdout)
    assert sorted(r["id"] for r in typed) == [3, 5]


def test_since_until_on_created(oh_server: Any) -> None:
    # Sample files are created 2024-03-01 12:00 .. 13:30 UTC.
    res = run_cli(oh_server, ["list", "--since", "2024-03-01T12:25:00Z"])
    assert sorted(r["id"] for r in jsonl(res.stdout)) == [2, 5, 6]
    res = run_cli(oh_server, ["list", "--until", "2024-02-29"])
    assert jsonl(res.stdout) == []
    res = run_cli(oh_server, ["list", "--until", "2024-03-01"])
    assert len(jsonl(res.stdout)) == 6


def test_hidden_member_files_are_listed_with_null_user(oh_server: Any) -> None:
    recs = jsonl(run_cli(oh_server, ["list", "-p", "102"]).stdout)
    hidden = [r for r in recs if r["id"] == 6][0]
    assert hidden["user"] == {"id": None, "name": None, "username": None}
    assert hidden["username"] is None


# -- paging ------------------------------------------------------------------------------------


def _generated(server: Any, n: int, members: int) -> set[int]:
    return set(server.generate(n, members, min_size=10, max_size=20, project_id=500, seed=7))


def test_350_shuffled_files_of_five_members_come_back_once_each(oh_server: Any) -> None:
    ids = _generated(oh_server, 350, 5)
    client = Client(oh_server.base_url, page_size=30, max_crawls=10)
    report = ListingReport()
    got = [f.id for f in client.iter_files(FileFilter(projects=(500,)), report)]
    assert len(got) == len(set(got)) == 350
    assert set(got) == ids
    assert report.complete


def test_unstable_paging_triggers_a_recrawl(oh_server: Any) -> None:
    _generated(oh_server, 120, 2)
    client = Client(oh_server.base_url, page_size=7, max_crawls=10)
    report = ListingReport()
    got = [f.id for f in client.iter_files(FileFilter(projects=(500,)), report)]
    assert len(got) == len(set(got)) == 120
    # With two members straddling 17 page boundaries, one crawl practically never sees all.
    assert report.crawls >= 1


@pytest.mark.parametrize("page_size", [5, 6, 100])
def test_exact_multiple_of_page_size_and_more(oh_server: Any, page_size: int) -> None:
    _generated(oh_server, 30, 3)
    client = Client(oh_server.base_url, page_size=page_size)
    got = [f.id for f in client.iter_files(FileFilter(projects=(500,)))]
    assert len(set(got)) == 30
    pages = [e for e in oh_server.log if e.path == "/api/public/project/500/datafiles/"]
    # No page after the last one: next is null there.
    assert len(pages) >= -(-30 // page_size)


def test_empty_listing(oh_server: Any) -> None:
    oh_server.add_project(300, "Empty Project")
    res = run_cli(oh_server, ["list", "--project", "300"])
    assert res.code == 0, res.stderr
    assert res.stdout == ""
    res = run_cli(oh_server, ["list", "--project", "300", "--format", "json"])
    assert json.loads(res.stdout) == []


def test_limit_stops_fetching_pages(oh_server: Any) -> None:
    _generated(oh_server, 100, 4)
    res = run_cli(oh_server, ["list", "-p", "500", "-n", "3"], env={"OHPUB_PAGE_SIZE": "10"})
    assert len(jsonl(res.stdout)) == 3
    pages = [e for e in oh_server.log if e.path == "/api/public/project/500/datafiles/"]
    assert len(pages) == 1


# -- formats -------------------------------------------------------------------------------------


def test_json_keeps_the_server_shape(oh_server: Any) -> None:
    res = run_cli(oh_server, ["list", "-p", "128", "--format", "json"])
    data = json.loads(res.stdout)
    assert isinstance(data, list) and len(data) == 2
    rec = [r for r in data if r["id"] == 3][0]
    for key in (
        "id",
        "basename",
        "created",
        "datatypes",
        "download_url",
        "metadata",
        "source_project",
        "user",
    ):
        assert key in rec
    assert rec["source_project"].endswith("/api/public/project/128/")
    assert rec["project_id"] == 128 and rec["datatype_ids"] == [3]


def test_csv_quoting(oh_server: Any) -> None:
    oh_server.add_file(
        basename='odd, "quoted"\nname.txt', content=b"x", project_id=102, username="alice"
    )
    res = run_cli(oh_server, ["list", "-u", "alice", "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert 'odd, "quoted"\nname.txt' in [r["basename"] for r in rows]
    assert {r["username"] for r in rows} == {"alice"}


def test_table_on_request(oh_server: Any) -> None:
    res = run_cli(oh_server, ["list", "-p", "128", "--format", "table"])
    assert res.code == 0
    assert "ag-000001.fastq.gz" in res.stdout


def test_list_projects_datatypes_members(oh_server: Any) -> None:
    projects = jsonl(run_cli(oh_server, ["list", "projects"]).stdout)
    assert {p["id"] for p in projects} >= {102, 128}
    datatypes = jsonl(run_cli(oh_server, ["list", "datatypes", "--format", "jsonl"]).stdout)
    assert {d["id"] for d in datatypes} == {1, 2, 3, 4}
    members = jsonl(run_cli(oh_server, ["list", "members"]).stdout)
    assert "alice" in {m["username"] for m in members}


# -- errors and exit codes ----------------------------------------------------------------------


def test_unknown_project_is_a_clear_error(oh_server: Any) -> None:
    res = run_cli(oh_server, ["list", "--project", "999"])
    assert res.code == 2
    assert res.stderr.startswith("ohpub: error: project 999 not found")
    assert "Traceback" not in res.stderr
    res = run_cli(oh_server, ["list", "--user", "nobody_here"])
    assert res.code == 2 and "member nobody_here not found" in res.stderr


def test_unreachable_host(tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    res = run_cli(None, ["--retries", "1", "list"], base_url=f"http://127.0.0.1:{port}")
    assert res.code == 1
    assert "connection refused" in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_dns_failure() -> None:
    res = run_cli(None, ["--retries", "1", "list"], base_url="http://no-such-host.invalid")
    assert res.code == 1
    assert "ohpub: error:" in res.stderr and "Traceback" not in res.stderr


def test_html_instead_of_json(oh_server: Any) -> None:
    oh_server.faults.listing_mode = "html"
    res = run_cli(oh_server, ["list"])
    assert res.code == 1
    assert "expected JSON" in res.stderr and "text/html" in res.stderr


def test_truncated_json(oh_server: Any) -> None:
    oh_server.faults.listing_mode = "truncated_json"
    res = run_cli(oh_server, ["list"])
    assert res.code == 1 and "invalid JSON" in res.stderr


def test_next_link_that_loops(oh_server: Any) -> None:
    oh_server.faults.listing_mode = "loop_next"
    res = run_cli(oh_server, ["list"], env={"OHPUB_PAGE_SIZE": "2"})
    assert res.code == 1 and "paging loop" in res.stderr


def test_oversized_page(oh_server: Any) -> None:
    oh_server.faults.listing_mode = "huge_page"
    res = run_cli(oh_server, ["list"])
    assert res.code == 1 and "refusing" in res.stderr


def test_bad_option_values() -> None:
    for args in (
        ["list", "--format", "xml"],
        ["list", "--since", "yesterday"],
        ["list", "--project", "abc"],
        ["list", "--user", "../etc"],
        ["list", "widgets"],
        ["nosuchcommand"],
    ):
        res = run_cli(None, args, base_url="http://127.0.0.1:9")
        assert res.code == 2, (args, res.stderr)
        assert res.stderr.startswith("ohpub: error:"), (args, res.stderr)
        assert "Traceback" not in res.stderr


def test_bad_base_url() -> None:
    res = run_cli(None, ["list"], base_url="ftp://example.org")
    assert res.code == 2 and "invalid base URL" in res.stderr


def test_retries_on_503_and_429_with_retry_after(oh_server: Any) -> None:
    oh_server.faults.script(role="api", statuses=[503, 502])
    oh_server.faults.script(role="api", statuses=[429], retry_after=1)
    client = Client(oh_server.base_url, retry=RetryPolicy(attempts=5, base=0.01))
    got = list(client.iter_files(FileFilter(projects=(102,))))
    assert len(got) == 4
    statuses = [e.status for e in oh_server.log if e.role == "api"]
    assert statuses[:3] == [503, 502, 429]


def test_retries_are_bounded(oh_server: Any) -> None:
    oh_server.faults.script(role="api", statuses=[503] * 50)
    client = Client(oh_server.base_url, retry=RetryPolicy(attempts=3, base=0.01))
    with pytest.raises(ServerError, match="gave up after 3 attempts"):
        list(client.iter_files(FileFilter()))
    assert oh_server.count(role="api") == 3


def test_detail_404_is_not_found(oh_server: Any) -> None:
    client = Client(oh_server.base_url)
    with pytest.raises(NotFoundError, match="file 424242 not found"):
        client.get_file(424242)


def test_user_agent_is_descriptive(oh_server: Any) -> None:
    run_cli(oh_server, ["list", "-p", "102"])
    ua = [e.headers.get("user-agent", "") for e in oh_server.log][0]
    assert ua.startswith("ohpub/")


# -- real processes: streaming, pipes, entry points ----------------------------------------


def _env(server: Any) -> dict[str, str]:
    env = dict(os.environ)
    env["OHPUB_BASE_URL"] = server.base_url
    env.pop("NO_COLOR", None)
    return env


def test_version_and_python_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ohpub", "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0
    assert out.stdout.strip().startswith("ohpub 0.")


def test_closed_pipe_ends_quietly(oh_server: Any) -> None:
    _generated(oh_server, 300, 3)
    proc = subprocess.run(
        f"{sys.executable} -m ohpub list -p 500 | head -1",
        shell=True,
        capture_output=True,
        text=True,
        env={**_env(oh_server), "OHPUB_PAGE_SIZE": "10"},
        cwd=REPO,
    )
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) == 1
    assert proc.stderr == ""


def test_first_line_before_last_page(oh_server: Any) -> None:
    _generated(oh_server, 40, 2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ohpub", "list", "-p", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**_env(oh_server), "OHPUB_PAGE_SIZE": "10"},
        cwd=REPO,
    )
    oh_server.faults.latency["api"] = 0.3
    assert proc.stdout is not None
    first = proc.stdout.readline()
    pages_when_first_line = oh_server.count(path_prefix="/api/public/project/500/datafiles/")
    rest = proc.stdout.read()
    proc.wait(timeout=30)
    assert json.loads(first)["project_id"] == 500
    assert proc.returncode == 0
    assert pages_when_first_line < 4
    assert len(rest.splitlines()) == 39


def test_pages_are_fetched_a_few_at_a_time_within_the_limit(oh_server: Any) -> None:
    _generated(oh_server, 100, 10)
    oh_server.faults.latency["api"] = 0.05
    res = run_cli(oh_server, ["list", "-p", "500"], env={"OHPUB_PAGE_SIZE": "10"})
    assert res.code == 0, res.stderr
    ids = [r["id"] for r in jsonl(res.stdout)]
    assert len(ids) == len(set(ids)) == 100
    assert 2 <= oh_server.peak_in_flight["api"] <= 4
    first_crawl = sorted(
        int(e.query.get("offset", 0))
        for e in oh_server.log
        if e.path == "/api/public/project/500/datafiles/"
        and e.query.get("limit") == "10"
        and int(e.query.get("offset", 0)) % 10 == 0  # a snapshot always crosses a boundary
    )
    assert first_crawl == list(range(0, 100, 10))  # every page exactly once
