"""Malformed listing records (issue 14, items 3 and 4): no record can stop a mirror, and
none vanishes silently.

Every test runs the CLI against the local Open Humans server, whose file serializer is
wrapped so chosen records carry hostile values. What a user must see: each bad record
named (``file <id>: <reason>``, or ``listing item <endpoint> position <n>: <reason>``
when it has no usable id) on stderr even with ``-q``, exit 1, and every good file
mirrored with its bytes.

The hypothesis test runs a few dozen examples in CI; more with, e.g.::

    OHPUB_HOSTILE_EXAMPLES=500 .venv/bin/python -m pytest tests/test_hostile_records.py -q
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ohpub.model.records import DataFile, RecordError, parse_datafile
from tests.helpers import FAST_RETRY, jsonl, run_cli, tree
from tests.ohserver import OHServer

SURROGATE = "@@LONE-SURROGATE@@"
"""Replaced by the JSON escape ``\\ud800`` in the served bytes (the server's encoder
cannot write a lone surrogate itself)."""

PROJECT = 800
Breaker = Callable[[dict[str, Any]], Any]

NO_ID: list[tuple[str, Breaker]] = [
    ("negative id", lambda r: r.update(id=-5)),
    ("string id", lambda r: r.update(id=str(r["id"]))),
    ("float id", lambda r: r.update(id=float(r["id"]))),
    ("bool id", lambda r: r.update(id=True)),
    ("missing id", lambda r: r.pop("id")),
    ("null id", lambda r: r.update(id=None)),
    ("id beyond 2**63-1", lambda r: r.update(id=2**64 + 102)),
    ("record is a list", lambda r: (r.clear(), r.update(__list__=True))),
]
WITH_ID: list[tuple[str, Breaker]] = [
    ("null basename", lambda r: r.update(basename=None)),
    ("missing basename", lambda r: r.pop("basename")),
    ("empty basename", lambda r: r.update(basename="")),
    ("list basename", lambda r: r.update(basename=["a"])),
    ("lone surrogate in basename", lambda r: r.update(basename=f"a{SURROGATE}.json")),
    ("lone surrogate in metadata", lambda r: r.update(metadata={"description": SURROGATE})),
    ("null created", lambda r: r.update(created=None)),
    ("garbage created", lambda r: r.update(created="yesterday")),
    ("numeric created", lambda r: r.update(created=1700000000)),
    ("created out of range", lambda r: r.update(created="0001-01-01T00:00:00+05:00")),
    ("null download_url", lambda r: r.update(download_url=None)),
    ("missing download_url", lambda r: r.pop("download_url")),
    ("ftp download_url", lambda r: r.update(download_url="ftp://127.0.0.1/x")),
    ("relative download_url", lambda r: r.update(download_url="/data-management/x/")),
    ("download_url without host", lambda r: r.update(download_url="http://")),
    ("username with path", lambda r: r["user"].update(username="../../etc")),
    ("username with slash", lambda r: r["user"].update(username="a/b")),
    ("empty username", lambda r: r["user"].update(username="")),
    ("hidden-members username", lambda r: r["user"].update(username="hidden-members")),
    ("numeric username", lambda r: r["user"].update(username=42)),
    ("negative user id", lambda r: r["user"].update(id=-3)),
    ("string user id", lambda r: r["user"].update(id="abc")),
    ("user id beyond 2**63-1", lambda r: r["user"].update(id=2**64 + 102)),
    ("user is a string", lambda r: r.update(user="alice")),
    (
        "project id of 300 digits",
        lambda r: r.update(source_project=f"http://x/api/public/project/{'9' * 300}/"),
    ),
    (
        "project id 2**64+102",
        lambda r: r.update(source_project=f"http://x/api/public/project/{2**64 + 102}/"),
    ),
]
WITH_ID += [
    ("source_project null", lambda r: r.update(source_project=None)),
    ("source_project without an id", lambda r: r.update(source_project="http://x/project/")),
    # Listed by /api/public/project/800/datafiles/, yet "of project 102": not dropped quietly.
    ("another project", lambda r: r.update(source_project="http://x/api/public/project/102/")),
]
ODD_BUT_GOOD: list[tuple[str, Breaker]] = [
    ("metadata a string", lambda r: r.update(metadata="free text")),
    ("datatypes not a list", lambda r: r.update(datatypes="x")),
    ("user null (hidden)", lambda r: r.update(user=None)),
]


def install(server: OHServer, breakers: dict[int, Breaker]) -> None:
    """Serve the files in ``breakers`` through their breaker (and lone surrogates)."""
    real_json = server._file_json
    real_list = server._list_view

    def file_json(f: Any, username_param: Any) -> Any:
        rec = real_json(f, username_param)
        breaker = breakers.get(f.id)
        if breaker is not None:
            breaker(rec)
            if rec.pop("__list__", False):
                return [1, 2, 3]
        return rec

    def list_view(view: str, kw: dict[str, str], req: Any) -> Any:
        reply = real_list(view, kw, req)
        if isinstance(reply.body, bytes):
            reply.body = reply.body.replace(SURROGATE.encode(), b"\\ud800")
        return reply

    server._file_json = file_json  # type: ignore[method-assign]
    server._list_view = list_view  # type: ignore[method-assign]


def add_files(server: OHServer, labels: list[str]) -> tuple[dict[str, int], list[int]]:
    """A victim file (alice) per label and three good files (dave), in project 800."""
    with server._lock:
        if PROJECT not in server._projects:
            server.add_project(PROJECT, "Odd Records")
    victims = {
        label: server.add_file(
            basename="victim.json", content=label.encode(), project_id=PROJECT, username="alice"
        )
        for label in labels
    }
    good = [
        server.add_file(
            basename=f"good{i}.json", content=b"ok %d" % i, project_id=PROJECT, username="dave"
        )
        for i in range(3)
    ]
    return victims, good


def records(text: str) -> list[dict[str, Any]]:
    """JSON lines split on newlines only: a record may hold U+0085 or U+2028 (in a
    basename, in metadata), which ``str.splitlines`` would also split on."""
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def read_index(dest: Path) -> list[dict[str, Any]]:
    return records((dest / "index.jsonl").read_text(encoding="utf-8"))


def mirror(server: OHServer, dest: Path, *args: str) -> Any:
    """``ohpub ARGS mirror DEST -p 800`` (ARGS: global options such as -q)."""
    return run_cli(server, [*args, "mirror", str(dest), "-p", str(PROJECT)], env=FAST_RETRY)


def test_every_malformed_record_is_a_named_failure_and_the_good_files_are_mirrored(
    oh_server: OHServer, tmp_path: Path
) -> None:
    cases = NO_ID + WITH_ID + ODD_BUT_GOOD
    victims, good = add_files(oh_server, [label for label, _ in cases])
    install(oh_server, {victims[label]: br for label, br in cases})
    dest = tmp_path / "m"
    res = mirror(oh_server, dest, "-q")
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    assert res.code == 1, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("ohpub: error:")]
    for label, _ in WITH_ID:
        fid = victims[label]
        assert [ln for ln in errors if ln.startswith(f"ohpub: error: file {fid}: ")], label
    anonymous = [
        ln
        for ln in errors
        if ln.startswith("ohpub: error: listing item /api/public/project/800/datafiles/ position ")
    ]
    assert len(anonymous) == len(NO_ID), res.stderr

    # Every good file, and every odd-but-valid one, is mirrored with its bytes.
    index = {r["id"]: r for r in read_index(dest)}
    have = tree(dest)
    for fid in good + [victims[label] for label, _ in ODD_BUT_GOOD]:
        assert have[index[fid]["path"]] == oh_server.content(fid)
    assert not {victims[label] for label, _ in NO_ID + WITH_ID} & set(index)

    # jsonl: one failed record per bad item (id null when it had none), the rest downloaded.
    again = run_cli(oh_server, ["mirror", str(dest), "-p", "800", "-f", "jsonl"], env=FAST_RETRY)
    assert again.code == 1
    failed = [r for r in jsonl(again.stdout) if r["status"] == "failed"]
    assert sorted(r["id"] for r in failed if r["id"] is not None) == sorted(
        victims[label] for label, _ in WITH_ID
    )
    assert sum(r["id"] is None for r in failed) == len(NO_ID)
    assert all(r["error"] for r in failed)


def test_a_300_digit_project_id_does_not_stop_the_mirror(
    oh_server: OHServer, tmp_path: Path
) -> None:
    # Issue 14 item 3: this ended the whole run with an internal OverflowError from SQLite.
    victims, good = add_files(oh_server, ["big"])
    install(
        oh_server,
        {victims["big"]: lambda r: r.update(source_project=f"/api/public/project/{'7' * 300}/")},
    )
    res = mirror(oh_server, tmp_path / "m")
    assert res.code == 1
    assert "internal error" not in res.stderr
    assert f"file {victims['big']}: bad source_project" in res.stderr
    assert sorted(tree(tmp_path / "m")) == [f"dave/800/good{i}.json" for i in range(3)]


def test_list_names_malformed_records_and_exits_1(oh_server: OHServer) -> None:
    victims, good = add_files(oh_server, ["created", "anon"])
    install(
        oh_server,
        {
            victims["created"]: lambda r: r.update(created="yesterday"),
            victims["anon"]: lambda r: r.update(id="x"),
        },
    )
    res = run_cli(oh_server, ["-q", "list", "-p", "800", "-f", "jsonl"])
    assert res.code == 1
    assert sorted(r["id"] for r in jsonl(res.stdout)) == good
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ohpub: error: 2 malformed listing records")
    assert f"file {victims['created']}: bad timestamp 'yesterday'" in lines[0]
    assert "listing item /api/public/project/800/datafiles/ position" in lines[0]
    # Without -q each one is also a warning as it arrives.
    res = run_cli(oh_server, ["list", "-p", "800", "-f", "jsonl"])
    assert f"ohpub: warning: file {victims['created']}: bad timestamp" in res.stderr


# -- a rejected record keeps its place ------------------------------------------------------


def _two_data_json(server: OHServer) -> tuple[int, int]:
    """Two ``data.json`` of one member in one project: the newer takes the plain name."""
    with server._lock:
        if PROJECT not in server._projects:
            server.add_project(PROJECT, "Odd Records")
    older = server.add_file(
        basename="data.json", content=b"older", project_id=PROJECT, username="alice"
    )
    newer = server.add_file(
        basename="data.json", content=b"newer", project_id=PROJECT, username="alice"
    )
    return older, newer


@pytest.mark.parametrize(
    "breaker",
    [
        pytest.param(lambda r: r.update(created="yesterday"), id="with-id"),
        pytest.param(lambda r: r.update(id="x"), id="without-id"),
    ],
)
def test_a_rejected_record_does_not_let_a_neighbour_take_its_placed_path(
    oh_server: OHServer, tmp_path: Path, breaker: Breaker
) -> None:
    """The newer file's record turns malformed upstream. 0.3.0 then laid the directory out as
    if the file were gone and renamed the older one onto ``data.json``, over the newer file's
    bytes: two state records at one path, and ``verify`` found a modified file."""
    older, newer = _two_data_json(oh_server)
    dest = tmp_path / "m"
    assert mirror(oh_server, dest).code == 0
    layout = {
        "alice/800/data.json": b"newer",
        f"alice/800/data.{older}.json": b"older",
    }
    assert tree(dest) == layout
    install(oh_server, {newer: breaker})
    res = mirror(oh_server, dest)
    assert res.code == 1 and "Traceback" not in res.stderr, res.stderr
    assert tree(dest) == layout  # nothing renamed onto a placed file's path
    ver = run_cli(oh_server, ["verify", str(dest), "-f", "jsonl"])
    assert ver.code == 0, ver.stdout + ver.stderr
    assert {r["status"] for r in jsonl(ver.stdout)} == {"ok"}
    index = read_index(dest)
    paths = [r["path"] for r in index if r.get("path")]
    assert len(paths) == len(set(paths)) == 2  # one record per path
    # A new upload in that directory takes a free name, and moves nobody.
    third = oh_server.add_file(
        basename="data.json", content=b"third", project_id=PROJECT, username="alice"
    )
    res = mirror(oh_server, dest)
    assert res.code == 1, res.stderr
    have = tree(dest)
    assert {p: have[p] for p in layout} == layout
    (new_path,) = set(have) - set(layout)
    assert (new_path, have[new_path]) == (f"alice/800/data.{third}.json", b"third")
    # Once the record is good again, the directory is laid out as usual.
    oh_server._file_json = OHServer._file_json.__get__(oh_server)  # type: ignore[method-assign]
    oh_server._list_view = OHServer._list_view.__get__(oh_server)  # type: ignore[method-assign]
    res = mirror(oh_server, dest)
    assert res.code == 0, res.stderr
    assert tree(dest) == {
        "alice/800/data.json": b"third",
        f"alice/800/data.{newer}.json": b"newer",
        f"alice/800/data.{older}.json": b"older",
    }
    assert run_cli(oh_server, ["verify", str(dest)]).code == 0


# -- the property: any JSON value in any field -----------------------------------------------

EXAMPLES = int(os.environ.get("OHPUB_HOSTILE_EXAMPLES", "30"))
settings.register_profile(
    "ohpub-hostile",
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("OHPUB_PROPERTY_RANDOM", "") in ("", "0"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HOSTILE = settings.get_profile("ohpub-hostile")

INTERESTING = st.sampled_from(
    [
        2**63 - 1,
        2**63,
        2**64 + 102,
        -1,
        0,
        "",
        "..",
        "../../etc/passwd",
        "/etc/passwd",
        "hidden-members",
        ".ohpub",
        "a/b",
        "nul\x00",
        SURROGATE,
        f"http://x/api/public/project/{'9' * 300}/",
        f"/api/public/project/{2**64 + 102}/",
        "/api/public/datatype/1/",
        "2024-03-01T12:00:00Z",
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+01:00",
        "ftp://127.0.0.1/x",
        "javascript:alert(1)",
        "http://[::1",
        "http://127.0.0.1:99999/x",
        {"id": None, "name": None, "username": None},
        {"id": 1, "name": "x", "username": "bob"},
        [],
        {},
        1e308,
        True,
    ]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
VALUES = INTERESTING | JSON
FIELDS = (
    "id",
    "basename",
    "created",
    "download_url",
    "metadata",
    "source_project",
    "datatypes",
    "user",
    "user.id",
    "user.name",
    "user.username",
)
CHANGES = st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=1, max_size=3)


def _apply(rec: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, drawn in changes.items():
        value = json.loads(json.dumps(drawn))  # drawn values are shared (and aliased) objects
        if key.startswith("user."):
            if isinstance(rec.get("user"), dict):
                rec["user"][key[5:]] = value
        else:
            rec[key] = value


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[tuple[OHServer, dict[str, int], list[int]]]:
    with OHServer(seed=5).load_sample() as server:
        victims, good = add_files(server, ["victim"])
        yield server, victims, good
    assert not server.errors, server.errors


@HOSTILE
@given(changes=CHANGES)
def test_any_json_in_any_field_gives_a_mirrored_file_or_a_named_failure(
    hostile_server: tuple[OHServer, dict[str, int], list[int]], changes: dict[str, Any]
) -> None:
    server, victims, good = hostile_server
    victim = victims["victim"]
    new_id = changes.get("id", victim)
    # An id that another listed file has is a repeat of that file (dedup by id), not a record.
    assume(new_id == victim or new_id not in server.file_ids())
    install(server, {victim: lambda r: _apply(r, changes)})
    root = Path(tempfile.mkdtemp(prefix="ohpub-hostile-"))
    try:
        dest = root / "m"
        res = run_cli(server, ["mirror", str(dest), "-p", "800", "-f", "jsonl"], env=FAST_RETRY)
        assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
        assert [p.name for p in root.iterdir()] == ["m"]  # nothing outside DEST
        recs = records(res.stdout)
        by_id = {r["id"]: r for r in recs}
        index = {r["id"]: r for r in read_index(dest)}
        have = tree(dest)
        for fid in good:
            assert by_id[fid]["status"] == "downloaded", res.stdout
            assert have[index[fid]["path"]] == server.content(fid)
        others = [r for r in recs if r["id"] not in good]
        assert len(others) == 1, recs
        outcome = others[0]
        if outcome["status"] == "failed":
            assert res.code == 1
            if outcome["path"] is None:  # rejected: the error names the record
                named = f"file {outcome['id']}:" if outcome["id"] is not None else "listing item "
                assert outcome["error"].startswith(named), outcome
            else:  # a valid record whose download failed (say, a URL to another host)
                assert outcome["error"] and outcome["id"] is not None, outcome
        else:
            assert outcome["status"] == "downloaded", outcome
            assert res.code == 0, res.stderr
            assert have[index[outcome["id"]]["path"]] == server.content(victim)
    finally:
        server._file_json = type(server)._file_json.__get__(server)  # type: ignore[method-assign]
        server._list_view = type(server)._list_view.__get__(server)  # type: ignore[method-assign]
        shutil.rmtree(root, ignore_errors=True)


def _record(server_like: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    rec = json.loads(json.dumps(server_like))
    _apply(rec, changes)
    return rec


SAMPLE = {
    "id": 57602983,
    "basename": "spotify-listening-archive.json",
    "created": "2022-11-15T22:25:48.853753Z",
    "datatypes": ["https://www.openhumans.org/api/public/datatype/14/"],
    "download_url": "https://www.openhumans.org/data-management/datafile-download/57602983/?key=k",
    "metadata": {"tags": ["spotify"], "description": "Spotify Play History"},
    "source_project": "https://www.openhumans.org/api/public/project/176/",
    "user": {"id": 1601, "name": "BenC", "username": "benc"},
}


@settings(HOSTILE, max_examples=EXAMPLES * 10)
@given(changes=CHANGES)
def test_parse_datafile_gives_a_file_or_a_record_error_never_another_exception(
    changes: dict[str, Any],
) -> None:
    from ohpub.local.state import FileState
    from ohpub.model.layout import Entry

    rec = _record(SAMPLE, changes)
    try:
        f = parse_datafile(rec)
    except RecordError as exc:
        assert exc.file_id is None or exc.file_id == rec.get("id")
        assert str(exc)
        return
    assert isinstance(f, DataFile)
    for value in (f.id, f.project_id, f.user.id, *f.datatype_ids):
        assert value is None or 0 <= value <= 2**63 - 1
    Entry.of(f)  # the layout accepts it
    json.dumps(FileState.from_datafile(f, 0.0).raw, ensure_ascii=False).encode()
