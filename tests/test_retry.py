"""The one retry engine (ohpub.http.Retrier): its budget restarts on progress, each retry
says so in one line, a name that does not resolve fails at once, Retry-After is honoured;
and the one redactor hides SigV4 signatures too."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from ohpub.model.config import RetryPolicy
from ohpub.model.errors import NetworkError, OhpubError
from ohpub.remote.client import ApiClient as Client
from ohpub.remote.http import Failure, Retrier, parse_content_range, redact
from ohpub.transfer.downloader import Downloader
from tests.helpers import add_big_file, content_of, run_cli, storage_gets_of


def _starts(gets: list[Any]) -> list[int]:
    return [int(g.headers["range"].split("=")[1].split("-")[0]) for g in gets[1:]]


def test_a_transfer_longer_than_the_budget_survives_two_resets(
    oh_server: Any, tmp_path: Path
) -> None:
    """Bug 1 of issue 9: the budget counted from the start of the transfer, so a transfer
    that had run longer than the budget gave up at its first reset without one resume."""
    size = 3_000_000
    fid = add_big_file(oh_server, size)
    oh_server.faults.bandwidth = 2_000_000  # 1.5 s in all, five times the budget below
    oh_server.faults.reset_after[fid] = (1_000_000, 2)
    policy = RetryPolicy(attempts=3, base=0.01, cap=0.02, budget=0.3)
    with Client(oh_server.base_url, retry=policy) as client:
        d = Downloader(client).to_part(client.get_file(fid), tmp_path / "part")
    assert (tmp_path / "part").read_bytes() == content_of(oh_server, fid)
    assert d.size == size and d.md5 == oh_server.md5(fid)
    gets = storage_gets_of(oh_server, fid)
    assert [g.status for g in gets] == [200, 206, 206]
    starts = _starts(gets)
    assert 0 < starts[0] < starts[1] < size  # each resume goes on where the last one broke


def test_each_retry_is_one_warning_line_naming_url_reason_and_count(
    oh_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    oh_server.faults.script(role="api", path_regex=r"/datafiles/", statuses=[503])
    oh_server.faults.script(role="storage", path_regex="taxonomy", statuses=[502, 500])
    policy = RetryPolicy(attempts=4, base=0.01, cap=0.02)
    caplog.set_level(logging.DEBUG, logger="ohpub")
    with Client(oh_server.base_url, retry=policy) as client:
        from ohpub.model.filters import FileFilter

        files = list(client.iter_files(FileFilter(projects=(128,))))
        f = next(x for x in files if "taxonomy" in x.basename)
        Downloader(client).to_part(f, tmp_path / "part")
    lines = [r.getMessage() for r in caplog.records if r.name == "ohpub.retry"]
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "ohpub.retry")
    assert len(lines) == 3, lines
    api = re.escape(oh_server.base_url + "/api/public/project/128/datafiles/")
    tail = r"\?limit=\d+ failed \(HTTP 503[^()]*\); retry 1 of 3 in [0-9.]+ s"
    assert re.fullmatch("GET " + api + tail, lines[0]), lines[0]
    assert re.fullmatch(
        r"GET http://127\.0\.0\.1:\d+/\S+taxonomy\S*\?\S*Signature=…\S* failed "
        r"\(storage answered 502\); retry 1 of 3 in [0-9.]+ s",
        lines[1],
    ), lines[1]
    assert "(storage answered 500); retry 2 of 3 in" in lines[2]
    assert "key=…" in lines[1] or "x-oh-key=…" in lines[1]


def test_retry_lines_reach_stderr_unless_quiet(oh_server: Any, tmp_path: Path) -> None:
    env = {"OHPUB_RETRY_BASE": "0.01", "OHPUB_RETRY_CAP": "0.02"}
    for quiet in (False, True):
        oh_server.faults.script(role="storage", path_regex="taxonomy", statuses=[503])
        args = ["-q"] if quiet else []
        dest = tmp_path / str(quiet)
        res = run_cli(oh_server, [*args, "mirror", str(dest), "-p", "128"], env=env)
        assert res.code == 0, res.stderr
        retry_lines = [ln for ln in res.stderr.splitlines() if "; retry " in ln]
        if quiet:
            assert retry_lines == []
        else:
            assert len(retry_lines) == 1
            assert re.fullmatch(
                r"ohpub: GET http://\S+taxonomy-summary\.tsv\?\S+ failed "
                r"\(storage answered 503\); retry 1 of 5 in [0-9.]+ s",
                retry_lines[0],
            ), retry_lines[0]


def test_probe_size_goes_through_the_same_retries(oh_server: Any) -> None:
    oh_server.faults.script(role="storage", path_regex="fastq", statuses=[503, 429])
    with Client(oh_server.base_url, retry=RetryPolicy(attempts=3, base=0.01)) as client:
        assert Downloader(client).probe_size(client.get_file(3)) == 939_303
    deadline = time.monotonic() + 5  # the probe hangs up before the body; the log follows
    while len(storage_gets_of(oh_server, 3)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    gets = storage_gets_of(oh_server, 3)
    assert [g.status for g in gets] == [503, 429, 206]
    assert gets[-1].headers.get("range") == "bytes=0-0"


def test_a_host_name_that_does_not_resolve_fails_at_once(tmp_path: Path) -> None:
    res = run_cli(None, ["list"], base_url="http://no-such-host.invalid")
    assert res.code == 1
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr  # no retry lines: it was not retried
    assert lines[0].startswith("ohpub: error: cannot resolve host name no-such-host.invalid")


def test_library_error_for_an_unknown_host_names_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ohpub")
    client = Client("http://no-such-host.invalid", retry=RetryPolicy(attempts=6))
    with client, pytest.raises(NetworkError, match="cannot resolve host name no-such-host"):
        client.get_file(1)
    assert not [r for r in caplog.records if r.name == "ohpub.retry"]


def test_storage_retry_after_is_waited_for(oh_server: Any, tmp_path: Path) -> None:
    """The 429's Retry-After (1 s) is the wait, not the policy's few milliseconds."""
    oh_server.faults.script(role="storage", path_regex="taxonomy", statuses=[429], retry_after=1)
    policy = RetryPolicy(attempts=3, base=0.001, cap=0.002)
    with Client(oh_server.base_url, retry=policy) as client:
        f = client.get_file(5)
        Downloader(client).to_part(f, tmp_path / "part")
    gets = storage_gets_of(oh_server, 5)
    assert [g.status for g in gets] == [429, 200]
    assert gets[1].start - gets[0].end >= 0.9


# -- the engine on its own (time is injected; nothing is mocked on the wire) ------------------


class _Stop(Exception):
    pass


def _retrier(policy: RetryPolicy, sleeps: list[float]) -> Retrier:
    def give_up(failure: Failure, attempts: int) -> Exception:
        return _Stop(f"{failure.reason} after {attempts}")

    return Retrier(policy, "https://example.org/x?key=secret", give_up, sleep=sleeps.append)


def test_backoff_has_full_jitter_within_the_doubling_cap() -> None:
    sleeps: list[float] = []
    r = _retrier(RetryPolicy(attempts=50, base=1.0, cap=8.0, budget=1e9), sleeps)
    for _ in range(40):
        r.wait(Failure("boom"))
    bounds = [min(8.0, 2.0**i) for i in range(40)]
    assert all(0 <= s <= b for s, b in zip(sleeps, bounds, strict=True))
    assert len({round(s, 6) for s in sleeps}) > 30  # random, not a fixed schedule


def test_progress_restarts_the_attempts() -> None:
    sleeps: list[float] = []
    r = _retrier(RetryPolicy(attempts=3, base=0.0, cap=0.0), sleeps)
    for _ in range(10):  # ten failures, never two in a row without progress in between
        r.wait(Failure("reset"))
        r.progress()
    r.wait(Failure("reset"))
    r.wait(Failure("reset"))
    with pytest.raises(_Stop, match="reset after 3"):
        r.wait(Failure("reset"))


def test_retry_after_beyond_the_budget_gives_up_without_waiting() -> None:
    sleeps: list[float] = []
    r = _retrier(RetryPolicy(attempts=9, budget=5.0), sleeps)
    r.wait(Failure("HTTP 429", retry_after=2.0))
    with pytest.raises(_Stop):
        r.wait(Failure("HTTP 429", retry_after=30.0))
    assert sleeps == [2.0]


def test_a_failure_not_worth_retrying_gives_up_at_the_first() -> None:
    sleeps: list[float] = []
    with pytest.raises(_Stop, match="after 1"):
        _retrier(RetryPolicy(attempts=9), sleeps).wait(Failure("no such host", limit=1))
    assert sleeps == []


# -- the redactor -----------------------------------------------------------------------------

SIGV4 = (
    "https://bucket.s3.amazonaws.com/member-files/x/big.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20261201%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20261201T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEKz%2F%2F%2F%2Bsecret"
    "&X-Amz-Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)
SECRETS = ("AKIAEXAMPLE", "IQoJb3JpZ2lu", "secret", "0123456789abcdef", "aws4_request")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(SIGV4, id="plain"),
        pytest.param("https://oh/redirect/1?to=" + quote(SIGV4, safe=""), id="encoded"),
        pytest.param(quote("https://oh/r?to=" + quote(SIGV4, safe=""), safe=""), id="twice"),
        pytest.param(f"storage answered 403 for {SIGV4} (gave up)", id="in-a-message"),
        pytest.param(SIGV4.replace("X-Amz-", "x-amz-"), id="lower-case"),
    ],
)
def test_redact_hides_sigv4_values_whole(text: str) -> None:
    out = redact(text)
    assert not [s for s in SECRETS if s in out], out
    assert redact(out) == out  # idempotent
    assert "X-Amz-Date=20261201T000000Z" in out.replace("%3D", "=").replace("%253D", "=").replace(
        "x-amz-", "X-Amz-"
    )  # what is not secret stays readable


def test_redact_keeps_sigv2_and_download_keys_hidden() -> None:
    url = (
        "https://s3/b/k?AWSAccessKeyId=AKIA1&Signature=abc%2Bdef%3D&Expires=1&x-oh-key=uuid1"
        " and https://www.openhumans.org/data-management/datafile-download/1/?key=uuid2"
    )
    out = redact(url)
    assert not [s for s in ("AKIA1", "abc", "def", "uuid1", "uuid2") if s in out], out
    assert "Expires=1" in out and redact(out) == out


# -- the Content-Range parser -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-0/939303", (0, 0, 939303)),
        ("bytes 100-199/200", (100, 199, 200)),
        ("bytes 5-9/*", (5, 9, None)),
        ("bytes */939303", (None, None, 939303)),
        ("  bytes 1-2/3  ", (1, 2, 3)),
        ("bytes 9-5/10", None),
        ("bytes 0-10/10", None),
        ("bytes */*", None),
        ("items 0-1/2", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_content_range(value: str | None, expected: tuple[Any, ...] | None) -> None:
    got = parse_content_range(value)
    assert (None if got is None else (got.first, got.last, got.total)) == expected


def test_errors_are_ohpub_errors(oh_server: Any) -> None:
    """A dead storage ends with the library's own error, naming the file and the count."""
    oh_server.faults.script(role="storage", statuses=[503] * 10)
    client = Client(oh_server.base_url, retry=RetryPolicy(attempts=2, base=0.01))
    with client, pytest.raises(OhpubError, match=r"file 5: storage answered 503 \(gave up after 2"):
        Downloader(client).probe_size(client.get_file(5))


def test_prefetched_pages_stop_retrying_when_the_listing_is_abandoned(oh176: Any) -> None:
    """``ohpub.files(limit=...)`` stops early: the pages fetched ahead that failed must not
    keep retrying against the server in the background (they did, for the whole budget)."""
    import time as _time

    import ohpub
    from ohpub.model.config import Config, RetryPolicy

    oh176.faults.script("api", path_regex=r"offset=[1-9]\d", statuses=[503] * 40)
    cfg = Config(page_size=5, retry=RetryPolicy(attempts=8, base=0.3, cap=0.3, budget=30))
    with ohpub.Client(oh176.base_url, config=cfg) as client:
        got = list(ohpub.files(project=176, limit=7, client=client))  # pages 1 and 2
        assert len(got) == 7
        _time.sleep(0.8)  # let what was in flight when the consumer left finish
        seen = len([e for e in oh176.log if e.path.endswith("/datafiles/")])
        _time.sleep(2.0)  # 0.2.0's prefetches kept retrying every 0-0.3 s here
        assert len([e for e in oh176.log if e.path.endswith("/datafiles/")]) == seen
