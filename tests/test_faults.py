"""Network and server faults (issue 4): every run ends with every file right, or with exit 1
and a clear message, and a rerun completes.

Each test switches a fault of the local Open Humans server (tests/ohserver.py) on, runs
``ohpub mirror`` (in-process, through the real CLI and real sockets), and checks what a
user notices: the exit code, stderr, the bytes on disk, and the requests the server saw.
Backoff is shortened with OHPUB_RETRY_BASE/CAP (see ``FAST_RETRY``); attempt counts are not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from ohpub.mirror.run import Mirror
from ohpub.mirror.types import MirrorOptions, NullEvents
from ohpub.model.config import RetryPolicy
from ohpub.model.records import DataFile
from ohpub.remote.client import ApiClient as Client
from tests.helpers import (
    FAST_RETRY,
    add_big_file,
    content_of,
    jsonl,
    run_cli,
    storage_gets_of,
    tree,
)

BIG = 3_000_000


def mirror(server: Any, dest: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """``ohpub [global args] mirror DEST [args]`` with fast backoff; ``--x`` before ``mirror``
    are passed as global options when given as ``("--retries", "3", "--", ...)``."""
    globals_: list[str] = []
    rest = list(args)
    if "--" in rest:
        cut = rest.index("--")
        globals_, rest = rest[:cut], rest[cut + 1 :]
    return run_cli(
        server, [*globals_, "mirror", str(dest), *rest], env={**FAST_RETRY, **(env or {})}
    )


def assert_mirror_right(server: Any, dest: Path, ids: list[int]) -> None:
    """Every listed file of ``ids`` is on disk with the server's bytes, and nothing else is."""
    files = tree(dest)
    assert len(files) == len(ids), sorted(files)
    want = sorted(hashlib.sha256(content_of(server, i)).hexdigest() for i in ids)
    assert sorted(hashlib.sha256(b).hexdigest() for b in files.values()) == want


def no_traceback(res: Any) -> None:
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout


# -- connection reset, truncation, Range ----------------------------------------------------


def test_reset_mid_body_of_a_small_file_is_retried(oh_server: Any, tmp_path: Path) -> None:
    oh_server.faults.reset_after[4] = (300, 1)
    res = mirror(oh_server, tmp_path, "-p", "102")
    assert res.code == 0, res.stderr
    assert_mirror_right(oh_server, tmp_path, [1, 2, 4, 6])
    assert (tmp_path / "bob_smith/102/fitbit-data.json").read_bytes() == content_of(oh_server, 4)
    gets = storage_gets_of(oh_server, 4)
    assert len(gets) == 2 and gets[0].bytes_sent == 300


def test_reset_mid_body_of_a_large_file_resumes_with_range(oh_server: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, BIG)
    oh_server.faults.reset_after[fid] = (1_000_000, 2)
    res = mirror(oh_server, tmp_path, "-p", "600", "-f", "jsonl")
    assert res.code == 0, res.stderr
    assert (tmp_path / "alice/600/big.bin").read_bytes() == content_of(oh_server, fid)
    gets = storage_gets_of(oh_server, fid)
    assert len(gets) == 3
    assert gets[0].headers.get("range") is None
    starts = [int(g.headers["range"].split("=")[1].rstrip("-")) for g in gets[1:]]
    assert 0 < starts[0] < starts[1] < BIG  # each retry continues where the last one broke
    assert all(g.headers.get("if-range") == oh_server.etag(fid) for g in gets[1:])
    assert [g.status for g in gets] == [200, 206, 206]
    # Never from zero again (bytes in flight when a reset hits are lost, hence not ~BIG).
    assert sum(g.bytes_sent for g in gets) < 2 * BIG
    assert not (tmp_path / ".ohpub/partial" / str(fid)).exists()


def test_truncated_body_is_resumed(oh_server: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, BIG)
    oh_server.faults.truncate_after[fid] = (700_000, 1)
    res = mirror(oh_server, tmp_path, "-p", "600")
    assert res.code == 0, res.stderr
    assert (tmp_path / "alice/600/big.bin").read_bytes() == content_of(oh_server, fid)
    gets = storage_gets_of(oh_server, fid)
    assert [g.headers.get("range") for g in gets] == [None, "bytes=700000-"]


def test_body_truncated_every_time_fails_clearly_then_rerun_completes(
    oh_server: Any, tmp_path: Path
) -> None:
    fid = add_big_file(oh_server, BIG)
    oh_server.faults.truncate_after[fid] = (0, 100)  # headers promise 3 MB, no body follows
    res = mirror(oh_server, tmp_path, "--retries", "3", "--", "-p", "600")
    assert res.code == 1
    no_traceback(res)
    assert f"alice/600/big.bin: file {fid}: connection broken mid-body" in res.stderr
    assert "gave up after 3 attempts" in res.stderr
    assert "1 failed" in res.stderr
    assert len(storage_gets_of(oh_server, fid)) == 3
    assert tree(tmp_path) == {}  # nothing at the final path
    oh_server.faults.truncate_after.clear()
    again = mirror(oh_server, tmp_path, "-p", "600")
    assert again.code == 0, again.stderr
    assert (tmp_path / "alice/600/big.bin").read_bytes() == content_of(oh_server, fid)


def test_storage_ignoring_range_restarts_never_appends(oh_server: Any, tmp_path: Path) -> None:
    """A partial left by an earlier run meets a storage that answers Range with a full 200."""
    fid = add_big_file(oh_server, BIG)
    oh_server.faults.truncate_after[fid] = (1_000_000, 1)
    first = mirror(oh_server, tmp_path, "--retries", "1", "--", "-p", "600")
    assert first.code == 1
    assert (tmp_path / ".ohpub/partial" / str(fid)).stat().st_size == 1_000_000
    oh_server.faults.ignore_range = True
    res = mirror(oh_server, tmp_path, "-p", "600", "-f", "jsonl")
    assert res.code == 0, res.stderr
    data = (tmp_path / "alice/600/big.bin").read_bytes()
    assert len(data) == BIG and data == content_of(oh_server, fid)
    last = storage_gets_of(oh_server, fid)[-1]
    assert last.headers.get("range") == "bytes=1000000-" and last.status == 200
    assert jsonl(res.stdout)[0]["status"] == "downloaded"  # restarted, so not "resumed"


def test_storage_ignoring_range_within_one_run(oh_server: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, BIG)
    oh_server.faults.ignore_range = True
    oh_server.faults.reset_after[fid] = (1_200_000, 1)
    res = mirror(oh_server, tmp_path, "-p", "600")
    assert res.code == 0, res.stderr
    assert (tmp_path / "alice/600/big.bin").read_bytes() == content_of(oh_server, fid)
    gets = storage_gets_of(oh_server, fid)
    assert [g.status for g in gets] == [200, 200] and gets[1].headers.get("range")


# -- 5xx and 429 bursts ---------------------------------------------------------------------

# (role, path regex, what it hits): the scripted answers come before the normal ones.
BURST_TARGETS = [
    pytest.param("api", r"/datafiles/", id="listing-page"),
    pytest.param("download", None, id="download-view"),
    pytest.param("storage", r"taxonomy", id="storage"),
]


@pytest.mark.parametrize(("role", "regex"), BURST_TARGETS)
def test_5xx_and_429_bursts_are_retried(
    oh_server: Any, tmp_path: Path, role: str, regex: str | None
) -> None:
    oh_server.faults.script(role=role, path_regex=regex, statuses=[500, 502, 503])
    oh_server.faults.script(role=role, path_regex=regex, statuses=[429], retry_after=0)
    res = mirror(oh_server, tmp_path, "-p", "128")
    assert res.code == 0, res.stderr
    assert_mirror_right(oh_server, tmp_path, [3, 5])
    statuses = [e.status for e in oh_server.log if e.role == role]
    assert sorted(s for s in statuses if s >= 400) == [429, 500, 502, 503]


def test_5xx_and_429_on_the_detail_endpoint_are_retried(oh_server: Any, tmp_path: Path) -> None:
    """A refused key sends ohpub to /api/public/datafile/<id>/ for a fresh one; that endpoint
    fails a few times too."""
    oh_server.faults.script(role="download", statuses=[403])
    oh_server.faults.script(role="api", path_regex=r"/datafile/\d+/", statuses=[503, 500, 502])
    oh_server.faults.script(role="api", path_regex=r"/datafile/\d+/", statuses=[429], retry_after=0)
    res = mirror(oh_server, tmp_path, "-p", "128", "-j", "1")
    assert res.code == 0, res.stderr
    assert_mirror_right(oh_server, tmp_path, [3, 5])
    detail = [e.status for e in oh_server.log if "/api/public/datafile/" in e.path]
    assert detail == [503, 500, 502, 429, 200]


@pytest.mark.parametrize(("role", "regex"), BURST_TARGETS)
def test_dead_server_gives_up_after_the_stated_attempts(
    oh_server: Any, tmp_path: Path, role: str, regex: str | None
) -> None:
    oh_server.faults.script(role=role, path_regex=regex, statuses=[503] * 100)
    res = mirror(oh_server, tmp_path, "--retries", "3", "--", "-p", "128")
    assert res.code == 1
    no_traceback(res)
    assert "HTTP 503" in res.stderr or "storage answered 503" in res.stderr
    assert "gave up after 3 attempts" in res.stderr
    failing = [e for e in oh_server.log if e.role == role and e.status == 503]
    if role == "storage":
        assert len(failing) == 3  # one file, three attempts; the other file is fine
        assert "bob_smith/128/taxonomy-summary.tsv: file 5: storage answered 503" in res.stderr
        assert (tmp_path / "alice/128/ag-000001.fastq.gz").read_bytes() == content_of(oh_server, 3)
    elif role == "download":
        assert len(failing) == 6  # both files, three attempts each
    else:
        assert len(failing) == 3
        assert res.stderr.count("ohpub: error:") == 1
    oh_server.faults.clear()
    again = mirror(oh_server, tmp_path, "-p", "128")
    assert again.code == 0, again.stderr
    assert_mirror_right(oh_server, tmp_path, [3, 5])


def test_dead_storage_ends_the_run_without_trying_every_file(
    oh_server: Any, tmp_path: Path
) -> None:
    """Backoff is bounded per request AND per run: when storage keeps failing, the mirror
    stops after a few files instead of spending the retry budget on each of thousands."""
    oh_server.generate(40, 4, 200, 2_000, project_id=300)
    oh_server.faults.script(role="storage", statuses=[503] * 10_000)
    res = mirror(oh_server, tmp_path, "--retries", "2", "--", "-p", "300", "-j", "2")
    assert res.code == 1
    no_traceback(res)
    assert "stopping" in res.stderr
    tried = {e.path for e in oh_server.log if e.role == "storage"}
    assert len(tried) < 20  # of 40 files
    assert tree(tmp_path) == {}


def test_retry_after_longer_than_the_budget_ends_at_once(oh_server: Any, tmp_path: Path) -> None:
    """Retry-After is honoured: a wait that would overrun the retry budget is not started."""
    oh_server.faults.script(role="api", path_regex=r"/datafiles/", statuses=[429], retry_after=30)
    res = run_cli(
        oh_server, ["mirror", str(tmp_path), "-p", "128"], env={"OHPUB_RETRY_BUDGET": "5"}
    )
    assert res.code == 1
    assert "HTTP 429" in res.stderr and "gave up after 1 attempts" in res.stderr
    assert oh_server.count(role="api", path_prefix="/api/public/project/128/datafiles/") == 1


def test_storage_retry_after_longer_than_the_budget_ends_at_once(
    oh_server: Any, tmp_path: Path
) -> None:
    oh_server.faults.script(role="storage", path_regex="taxonomy", statuses=[429], retry_after=30)
    res = run_cli(
        oh_server, ["mirror", str(tmp_path), "-p", "128"], env={"OHPUB_RETRY_BUDGET": "5"}
    )
    assert res.code == 1
    assert "storage answered 429" in res.stderr and "gave up after 1 attempts" in res.stderr
    assert len(storage_gets_of(oh_server, 5)) == 1


def test_library_retry_budget_bounds_a_dead_server(oh_server: Any) -> None:
    """RetryPolicy(budget=...) ends the retries of one request even with many attempts left."""
    oh_server.faults.script(role="api", statuses=[503] * 10_000)
    client = Client(oh_server.base_url, retry=RetryPolicy(attempts=1000, base=0.05, budget=0.5))
    with pytest.raises(Exception, match="gave up after"):
        list(client.iter_files())
    assert 2 <= oh_server.count(role="api") < 1000


# -- keys and signed URLs that expire --------------------------------------------------------


class _Hook(NullEvents):
    """Runs ``action(f)`` once, when the first download starts (inside the mirror run)."""

    def __init__(self, action: Any, when: str = "started") -> None:
        self.action = action
        self.when = when
        self.done = False

    def _fire(self, arg: Any) -> None:
        if not self.done:
            self.done = True
            self.action(arg)

    def started(self, f: DataFile) -> None:
        if self.when == "started":
            self._fire(f)

    def progress(self, nbytes: int) -> None:
        if self.when == "progress" and nbytes > 0:
            self._fire(nbytes)


def _lib_mirror(server: Any, dest: Path, events: Any, **opts: Any) -> Any:
    client = Client(server.base_url, retry=RetryPolicy(attempts=4, base=0.01, cap=0.05))
    with client:
        return Mirror(client, MirrorOptions(dest=dest, **opts), events).run()


def test_key_expired_between_listing_and_download(oh_server: Any, tmp_path: Path) -> None:
    from ohpub.model.filters import FileFilter

    hook = _Hook(lambda f: oh_server.advance(3700))  # every listed key is now 61 min old
    summary = _lib_mirror(oh_server, tmp_path, hook, flt=FileFilter(projects=(102,)), jobs=1)
    assert summary.ok
    assert_mirror_right(oh_server, tmp_path, [1, 2, 4, 6])
    views = [e.status for e in oh_server.log if e.role == "download"]
    assert views.count(403) == 4 and views.count(302) == 4
    assert oh_server.count(role="api", path_prefix="/api/public/datafile/") == 4


def test_storage_url_expired_mid_download(oh_server: Any, tmp_path: Path) -> None:
    from ohpub.model.filters import FileFilter

    fid = add_big_file(oh_server, BIG)
    oh_server.faults.reset_after[fid] = (1_000_000, 1)
    hook = _Hook(lambda n: oh_server.advance(700), when="progress")  # signed URLs live 600 s
    summary = _lib_mirror(oh_server, tmp_path, hook, flt=FileFilter(projects=(600,)))
    assert summary.ok
    assert (tmp_path / "alice/600/big.bin").read_bytes() == content_of(oh_server, fid)
    gets = storage_gets_of(oh_server, fid)
    assert [g.status for g in gets] == [200, 403, 206]
    assert oh_server.count(role="download") == 2  # a new signed URL, through the view


# -- corrupted bytes ------------------------------------------------------------------------


def test_corrupted_bytes_are_not_committed_and_the_file_is_named(
    oh_server: Any, tmp_path: Path
) -> None:
    oh_server.faults.corrupt.add(5)
    res = mirror(oh_server, tmp_path, "-p", "128")
    assert res.code == 1
    no_traceback(res)
    line = next(ln for ln in res.stderr.splitlines() if "checksum mismatch" in ln)
    assert "bob_smith/128/taxonomy-summary.tsv" in line and "file 5" in line
    assert not (tmp_path / "bob_smith/128/taxonomy-summary.tsv").exists()
    assert sorted(tree(tmp_path)) == ["alice/128/ag-000001.fastq.gz"]
    verify = run_cli(oh_server, ["verify", str(tmp_path)])
    assert verify.code == 0, verify.stdout  # nothing wrong was placed
    oh_server.faults.corrupt.clear()
    again = mirror(oh_server, tmp_path, "-p", "128")
    assert again.code == 0, again.stderr
    assert_mirror_right(oh_server, tmp_path, [3, 5])


# -- unavailable files ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["storage-404", "storage-403", "deleted-after-listing"])
def test_unavailable_file_others_complete_and_strict_fails(
    oh_server: Any, tmp_path: Path, how: str
) -> None:
    from ohpub.model.filters import FileFilter

    def run(strict: bool) -> Any:
        if how == "storage-404":
            oh_server.storage_missing.add(5)
        elif how == "storage-403":
            oh_server.faults.script(role="storage", path_regex="taxonomy", statuses=[403] * 20)
        if how != "deleted-after-listing":
            args = ["-p", "128", "-f", "jsonl", *(["--strict"] if strict else [])]
            res = mirror(oh_server, tmp_path / str(strict), *args)
            return res.code, {r["id"]: r["status"] for r in jsonl(res.stdout)}, 5
        # The file is deleted upstream after it was listed: the view says "unavailable".
        new = oh_server.add_file(
            basename="gone.tsv", content=b"x" * 100, project_id=128, username="bob_smith"
        )
        seen: dict[int, str] = {}

        class Events(NullEvents):
            def started(self, f: DataFile) -> None:
                if f.id == new:
                    oh_server.delete_file(new)

            def result(self, r: Any) -> None:
                seen[r.id] = r.status

        summary = _lib_mirror(
            oh_server,
            tmp_path / str(strict),
            Events(),
            flt=FileFilter(projects=(128,)),
            strict=strict,
            jobs=1,
        )
        return (0 if summary.ok else 1), {k: v for k, v in seen.items() if k in (3, new)}, new

    code, statuses, gone = run(strict=False)
    assert code == 0
    assert statuses == {3: "downloaded", gone: "unavailable"}
    loose = tmp_path / "False"
    assert (loose / "alice/128/ag-000001.fastq.gz").read_bytes() == content_of(oh_server, 3)
    gone_name = "gone.tsv" if how == "deleted-after-listing" else "taxonomy-summary.tsv"
    assert not [p for p in tree(loose) if gone_name in p]
    oh_server.faults.clear()
    code, statuses, gone = run(strict=True)
    assert code == 1 and statuses[gone] == "unavailable"


# -- listing faults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("html", "expected JSON"),
        ("truncated_json", "invalid JSON"),
        ("loop_next", "paging loop"),
        ("huge_page", "refusing"),
    ],
)
def test_bad_listing_pages_end_with_a_clear_error(
    oh_server: Any, tmp_path: Path, mode: str, message: str
) -> None:
    oh_server.faults.listing(mode)
    res = mirror(oh_server, tmp_path, "-p", "102")
    assert res.code == 1
    no_traceback(res)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("ohpub: error:")]
    assert len(errors) == 1 and message in errors[0], res.stderr
    assert "key=" not in res.stderr or "key=…" in res.stderr or "…" in res.stderr
    assert tree(tmp_path) == {}
    oh_server.faults.listing(None)
    again = mirror(oh_server, tmp_path, "-p", "102")
    assert again.code == 0, again.stderr
    assert_mirror_right(oh_server, tmp_path, [1, 2, 4, 6])


def test_bad_listing_in_list_command_too(oh_server: Any) -> None:
    for mode in ("html", "truncated_json", "loop_next", "huge_page"):
        oh_server.faults.listing(mode, times=1)
        res = run_cli(oh_server, ["list", "--project", "102", "-f", "jsonl"], env=FAST_RETRY)
        assert res.code == 1, mode
        no_traceback(res)
        assert res.stderr.startswith("ohpub: error:"), res.stderr


# -- slow server ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["api", "download", "storage"])
def test_every_request_has_a_timeout(oh_server: Any, tmp_path: Path, role: str) -> None:
    oh_server.faults.latency[role] = 5.0
    args = ["--timeout", "0.3", "--retries", "2", "--", "-p", "128", "--name", "taxonomy*"]
    res = mirror(oh_server, tmp_path, *args)
    assert res.code == 1
    no_traceback(res)
    assert "timed out" in res.stderr and "gave up after 2 attempts" in res.stderr
    assert tree(tmp_path) == {}
    oh_server.faults.latency.clear()
    again = mirror(oh_server, tmp_path, "-p", "128", "--name", "taxonomy*")
    assert again.code == 0, again.stderr
    assert_mirror_right(oh_server, tmp_path, [5])


def test_stalled_body_read_times_out_and_resumes(oh_server: Any, tmp_path: Path) -> None:
    fid = add_big_file(oh_server, BIG)
    oh_server.faults.stall[fid] = (800_000, 30.0, 1)
    res = mirror(oh_server, tmp_path, "--timeout", "0.5", "--", "-p", "600")
    assert res.code == 0, res.stderr
    assert (tmp_path / "alice/600/big.bin").read_bytes() == content_of(oh_server, fid)
    later = [g for g in storage_gets_of(oh_server, fid) if g.headers.get("range")]
    assert len(later) == 1 and int(later[0].headers["range"].split("=")[1].rstrip("-")) > 0
