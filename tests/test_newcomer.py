"""What a new user meets (issue 21): honest numbers on screen, words a person reads, errors
in one plain line, and a Python API with one shape. Each test failed on 0.3.0."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import ohpub
from ohpub.cli.progress import MirrorView
from ohpub.model.units import human_bytes
from tests.helpers import FAST_RETRY, add_big_file, run_cli
from tests.test_readonly import as_nobody
from tests.test_terminal import Terminal, _env

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(oh176: Any) -> Any:
    with ohpub.Client(oh176.base_url, retries=2) as c:
        yield c


# -- numbers on screen -----------------------------------------------------------------------


def test_no_filter_notice_is_said_once_whatever_the_threads(tmp_path: Path) -> None:
    """Eight workers start their first transfer at once: one notice, not two or three."""
    from ohpub.model.records import parse_datafile

    log = tmp_path / "log"
    run_cli(None, ["--log-file", str(log), "help"])  # the log file handler, as a run has it
    err = io.StringIO()
    view = MirrorView(fmt="text", quiet=False, bars=False, out=io.StringIO(), announce_all="D")
    record = {
        "id": 1,
        "basename": "a.json",
        "created": "2024-01-01T00:00:00Z",
        "download_url": "http://x/1",
        "metadata": {},
        "source_project": "/api/public/project/1/",
        "datatypes": [],
        "user": {"id": 1, "username": "alice"},
    }
    f = parse_datafile(record)
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        view.started(f)

    sys_err, sys.stderr = sys.stderr, err
    try:
        threads = [threading.Thread(target=start) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        view.expected(4120)  # the listing's count arrives after: no second notice either
    finally:
        sys.stderr = sys_err
    assert err.getvalue().count("no filter given") == 1, err.getvalue()
    assert log.read_text().count("no filter given") == 1


def test_a_mirror_without_filter_says_so_once(oh_server: Any, tmp_path: Path) -> None:
    log = tmp_path / "log"
    res = run_cli(oh_server, ["--log-file", str(log), "mirror", str(tmp_path / "m"), "-j", "8"])
    assert res.code == 0, res.stderr
    assert res.stderr.count("ohpub: no filter given: mirroring") == 1, res.stderr
    assert log.read_text().count("no filter given") == 1


def _half_downloaded(server: Any, dest: Path, size: int = 3_000_000) -> int:
    """A mirror of one big file whose first run stopped part way (the connection reset
    after 1.2 MB); the partial and its resume record stay for the next run. Returns the
    partial's size."""
    fid = add_big_file(server, size)
    server.faults.reset_after[fid] = (1_200_000, 1)
    first = run_cli(server, ["mirror", str(dest), "-p", "600"], env={"OHPUB_RETRIES": "1"})
    assert first.code == 1, first.stderr
    kept = (dest / ".ohpub/partial" / str(fid)).stat().st_size
    assert 0 < kept < size
    return kept


def test_a_resumed_run_counts_only_its_own_bytes(oh_server: Any, tmp_path: Path) -> None:
    """Issue 21: 4 resumed files reported "16.0 MB downloaded" and a rate 3x the link."""
    kept = _half_downloaded(oh_server, tmp_path)
    view = MirrorView(fmt="text", quiet=True, bars=False, out=io.StringIO())
    with ohpub.Client(oh_server.base_url) as c:
        res = ohpub.mirror(tmp_path, project=600, client=c, progress=view.on_event)
    assert res.ok and res.counts["resumed"] == 1
    assert (res.bytes_downloaded, res.bytes_reused) == (3_000_000 - kept, kept)
    assert view.counts.bytes_fetched == 3_000_000 - kept  # the live rate's count
    assert view.counts.bytes_there == 3_000_000
    assert f"bytes: 3.0 MB of 3.0 MB announced, {human_bytes(kept)} already there" in (
        view.lines(200)[1]
    )


def test_the_summary_says_what_this_run_downloaded(oh_server: Any, tmp_path: Path) -> None:
    kept = _half_downloaded(oh_server, tmp_path)
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "600"])
    assert res.code == 0, res.stderr
    now, before = human_bytes(3_000_000 - kept), human_bytes(kept)
    assert re.fullmatch(
        rf"1 file: 1 downloaded \({now}, 1 resumed: {before} already there\), 0 unchanged, "
        r"0 failed in \d+\.\d s\n",
        res.stderr,
    ), res.stderr


def test_unchanged_files_count_as_done_from_the_start(oh_server: Any, tmp_path: Path) -> None:
    """Issue 21: the files bar started at 0/31 although 6 files were already unchanged."""
    with ohpub.Client(oh_server.base_url) as c:
        assert ohpub.mirror(tmp_path, project=102, client=c).ok
        (tmp_path / "alice/102/fitbit-data.json").unlink()  # 3 stay, 1 to download
        view = MirrorView(fmt="text", quiet=True, bars=False, out=io.StringIO())
        seen: list[tuple[int, int | None]] = []

        def watch(e: ohpub.MirrorEvent) -> None:
            view.on_event(e)
            if e.kind == "started":
                seen.append((view.counts.done, view.counts.total))

        assert ohpub.mirror(tmp_path, project=102, client=c, progress=watch).ok
    assert seen and seen[0][0] == 3, seen
    assert view.counts.done == 4
    view.listing_done(4)
    assert view.lines(100)[0].startswith("files: 4/4 100% |")


def _silent_server() -> tuple[Any, int]:
    """A server that accepts connections and never answers."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize("args", [["list", "-p", "176"], ["fetch", "57602983"], ["mirror", "M"]])
def test_a_silent_server_shows_a_waiting_line_with_a_clock(tmp_path: Path, args: list[str]) -> None:
    """Issue 21: nothing on screen for 30 s. Now a waiting line with a running clock comes
    first, long before the request times out (--timeout 6) and the error ends it."""
    sock, port = _silent_server()
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
        env.update(OHPUB_BASE_URL=f"http://127.0.0.1:{port}", TERM="xterm-256color", NO_COLOR="1")
        env.update(OHPUB_TIMEOUT="6", OHPUB_RETRIES="1")
        argv = [str(tmp_path / "m") if a == "M" else a for a in args]
        term = Terminal(argv, env, 100)
        term.pump(until=lambda: term.shows(r"waiting for the server \[00:0[2-5]\]"))
        waited = term.lines()
        assert term.finish() != 0
    finally:
        sock.close()
    assert any(re.search(r"waiting for the server \[00:0\d\]", row) for row in waited), waited
    assert not any("error" in row for row in waited), waited  # before the request gave up
    assert any(row.startswith("ohpub: error: ") for row in term.lines()[-3:]), term.lines()


def test_retry_lines_fit_the_terminal(oh176: Any, tmp_path: Path) -> None:
    """Issue 21: retry lines were wider than the terminal and wrapped."""
    oh176.faults.script(role="api", path_regex="datafiles", statuses=[503, 503])
    env = _env(oh176, **FAST_RETRY)
    term = Terminal(["list", "-p", "176", "--limit", "1", "-f", "jsonl"], env, 60)
    assert term.finish() == 0
    text = term.raw.decode()
    retries = [line for line in text.replace("\r\n", "\n").split("\n") if "retry 1 of" in line]
    assert retries, text
    for line in retries:
        assert len(line) < 60 and "…" in line, line


# -- words a person reads ----------------------------------------------------------------------


def test_status_speaks_to_a_person(oh_server: Any, tmp_path: Path) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    text = run_cli(None, ["status", str(tmp_path)]).stdout
    assert re.search(
        r"^last run: ok, ended \d{4}-\d\d-\d\d \d\d:\d\d \(just now\) after \d+\.\d s$", text, re.M
    ), text
    assert "+00:00" not in text and "T" not in text.split("last run:")[1]  # no raw ISO time
    assert "member (hidden): 1 file, " in text and "1 files" not in text
    data = json.loads(run_cli(None, ["status", str(tmp_path), "-f", "json"]).stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", data["last_run"]["ended_at"])


def test_every_stale_line_says_why(oh_server: Any, tmp_path: Path) -> None:
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    (tmp_path / "alice/102/fitbit-data.json").write_bytes(b"edited")
    assert run_cli(None, ["verify", str(tmp_path)]).code == 1
    st = run_cli(None, ["status", str(tmp_path), "--max-age", "1h"])
    assert st.code == 1
    line = st.stdout.splitlines()[-1]
    assert re.fullmatch(
        r"STALE: verify found 1 file modified or missing since the last mirror run \(ended "
        r"\d{4}-\d\d-\d\d \d\d:\d\d \(just now\)\); the next mirror downloads them again",
        line,
    ), line
    # The reason also goes to stderr, so a monitor's '> /dev/null' keeps it.
    assert st.stderr == f"ohpub: error: {tmp_path} is stale: {line.removeprefix('STALE: ')}\n"


def test_a_failed_run_shows_its_first_error(oh_server: Any, tmp_path: Path) -> None:
    oh_server.faults.corrupt.add(2)
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"], env=FAST_RETRY).code == 1
    text = run_cli(None, ["status", str(tmp_path)]).stdout
    assert re.search(r"^last run: failed, ended .* after [\d.]+ s$", text, re.M), text
    first = re.search(r"^first error: (.*)$", text, re.M)
    assert first and "checksum mismatch" in first.group(1), text
    st = run_cli(None, ["status", str(tmp_path), "--max-age", "26h"])
    assert st.code == 1
    reason = st.stdout.splitlines()[-1]
    assert reason.startswith("STALE: the last mirror run failed; it ended ")
    assert reason.endswith(f"first error: {first.group(1)}"), reason
    data = json.loads(run_cli(None, ["status", str(tmp_path), "-f", "json"]).stdout)
    assert data["last_run"]["error"] == first.group(1)


def test_the_log_names_the_server_and_says_the_listing_plainly(
    oh_server: Any, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    res = run_cli(oh_server, ["--log-file", str(log), "mirror", str(tmp_path / "m"), "-p", "102"])
    assert res.code == 0, res.stderr
    text = log.read_text()
    assert f"server {oh_server.base_url}" in text.splitlines()[0]
    done = r" INFO listing done: 4 files, complete, 1 request \(\d+ records sent\)$"
    assert re.search(done, text, re.M), text
    for jargon in ("passes", "snapshots", "cut segments", "rejected items"):
        assert jargon not in text


def test_errors_are_one_plain_line(oh_server: Any, tmp_path: Path) -> None:
    res = run_cli(None, ["list", "-p", "1"], base_url="http://no-such-host.invalid")
    assert res.code == 1
    (line,) = res.stderr.splitlines()
    assert re.fullmatch(r"ohpub: error: [^()]*(\([^()]*\))?[^()]*(; [^()]*)?", line), line
    res = run_cli(oh_server, ["list", "--since", "notadate"])
    assert res.code == 2 and res.stderr.startswith(
        "ohpub: error: invalid value for --since: 'notadate' is not a date; "
    ), res.stderr
    res = run_cli(oh_server, ["list"], env={"OHPUB_UNTIL": "soon"})
    assert res.code == 2 and "--until (from OHPUB_UNTIL): 'soon' is not a date" in res.stderr
    res = run_cli(None, ["status", str(tmp_path / "nonexistent")])
    assert res.stderr == f"ohpub: error: {tmp_path / 'nonexistent'} does not exist\n"
    res = run_cli(None, ["completion"])
    assert res.code == 2 and "\t" not in res.stderr and len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith("ohpub: error: missing argument SHELL (one of bash, zsh, fish)")


def test_fetch_into_a_read_only_directory_is_a_usage_error(oh_server: Any, tmp_path: Path) -> None:
    target = Path("/tmp") / f"ohpub-ro-{os.getpid()}"
    target.mkdir(mode=0o755, exist_ok=True)
    try:
        res = as_nobody(["fetch", "1", "-d", str(target)], oh_server)
    finally:
        target.rmdir()
    assert res.code == 2, res.stderr
    assert res.stderr.startswith(f"ohpub: error: {target} is not writable"), res.stderr
    assert ".ohpub-part" not in res.stderr


def test_n_means_dry_run_and_list_n_still_works_for_now(oh_server: Any, tmp_path: Path) -> None:
    res = run_cli(oh_server, ["mirror", str(tmp_path / "m"), "-p", "102", "-n"])
    assert res.code == 0 and res.stderr.startswith("dry run: 4 files")
    assert not (tmp_path / "m").exists()
    res = run_cli(oh_server, ["list", "-p", "102", "-n", "2"])
    assert res.code == 0 and len(res.stdout.splitlines()) == 2
    assert "ohpub: warning: -n for --limit is deprecated" in res.stderr
    res = run_cli(oh_server, ["list", "-p", "102", "--limit", "2"])
    assert len(res.stdout.splitlines()) == 2 and res.stderr == ""
    assert "-n, --limit" not in run_cli(None, ["list", "--help"]).stdout


def test_help_summaries_use_the_terminals_width() -> None:
    """Issue 21: 'ohpub help' cut every summary at 80 columns on a 120-column terminal."""
    env = {**os.environ, "COLUMNS": "120", "PYTHONPATH": str(REPO)}
    text = subprocess.run(
        [sys.executable, "-m", "ohpub", "help"], capture_output=True, text=True, env=env
    ).stdout
    summary = "List public data files (default), projects, datatypes or members."
    assert f"  list        {summary}\n" in text
    assert "..." not in text.split("Commands:")[1]
    assert max(len(line) for line in text.splitlines()) <= 120


# -- one shape for the Python API ----------------------------------------------------------------


def test_ids_may_be_strings(oh176: Any, client: Any, tmp_path: Path) -> None:
    assert len(list(ohpub.files(project="176", client=client))) == 31
    assert len(list(ohpub.files(project=["176"], limit=2, client=client))) == 2
    res = ohpub.mirror(tmp_path / "m", project="176", client=client)
    assert res.ok and res.counts["downloaded"] == 31
    assert ohpub.read_bytes("57602983", client=client) == bytes(oh176.content(57602983))
    assert ohpub.fetch("57602983", tmp_path, client=client).is_file()
    with pytest.raises(ohpub.UsageError, match="invalid value for project: 'x' is not an id"):
        ohpub.files(project="x")


def test_one_shape_for_results(oh176: Any, client: Any, tmp_path: Path) -> None:
    res = ohpub.mirror(tmp_path, project=176, client=client)
    assert all(isinstance(r.path, Path) and not r.path.is_absolute() for r in res.files)
    assert set(res.counts) == {s.value for s in ohpub.FileStatus}
    assert len(repr(res)) < 300 and "31 results" in repr(res)
    v = ohpub.verify(tmp_path)
    assert all(isinstance(r, ohpub.VerifyRecord) and isinstance(r.path, Path) for r in v.files)
    assert v.counts == {"ok": 31, "modified": 0, "missing": 0, "untracked": 0}
    assert len(repr(v)) < 300
    st = ohpub.status(tmp_path, max_age="26h")
    assert isinstance(st, ohpub.MirrorStatus) and isinstance(st.last_run, ohpub.RunRecord)
    assert st.by_project["176"] == ohpub.Tally(31, st.bytes) and not st.stale
    assert st.last_run.counts == {s.value: 0 for s in ohpub.FileStatus} | {"downloaded": 31}
    assert st.to_dict()["by_project"] == {"176": {"files": 31, "bytes": st.bytes}}
    assert len(repr(st)) < 200
    got = ohpub.fetch_many([57602983], tmp_path / "f", client=client)
    assert isinstance(got, list) and isinstance(got[0].target, Path)
    for listing in (ohpub.projects, ohpub.datatypes, ohpub.members):
        assert isinstance(listing(client=client), list)
    both = ohpub.files(ohpub.Filters(project=176), user="benc", client=client)
    assert {f.username for f in both} == {"benc"}


def test_dir_shows_the_api_not_the_layers() -> None:
    names = dir(ohpub)
    for internal in ("library", "model", "remote", "local", "transfer", "ops", "cli"):
        assert internal not in names
    assert {"files", "mirror", "status", "Filters", "OhpubError"} <= set(names)


def test_the_library_prints_nothing_unless_logging_is_configured(oh176: Any) -> None:
    oh176.faults.script(role="api", path_regex="datafiles", statuses=[503])
    script = (
        "import ohpub\n"
        "c = ohpub.Client(retries=3)\n"
        "print(len(list(ohpub.files(project=176, client=c))))\n"
    )
    env = {**os.environ, "OHPUB_BASE_URL": oh176.base_url, "PYTHONPATH": str(REPO), **FAST_RETRY}
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert res.returncode == 0 and res.stdout == "31\n" and res.stderr == "", res.stderr
    assert any("datafiles" in e.path and e.status == 503 for e in list(oh176.log))


def test_an_exceptions_message_carries_its_hint(client: Any) -> None:
    with pytest.raises(ohpub.NotFoundError) as info:
        list(ohpub.files(project=99999, client=client))
    exc = info.value
    assert exc.hint and str(exc) == f"{exc.message}; {exc.hint}"


def test_filters_are_declared_once(oh176: Any) -> None:
    import inspect

    from ohpub.cli.options import FILTER_OPTIONS

    names = ohpub.Filters.names()
    assert tuple(FILTER_OPTIONS) == names
    for func in (ohpub.files, ohpub.mirror):
        params = inspect.signature(func).parameters
        assert all(params[n].kind is inspect.Parameter.KEYWORD_ONLY for n in names)
    with pytest.raises(ohpub.UsageError, match="unknown filter 'projet'; did you mean 'project'"):
        ohpub.files(projet=176)
