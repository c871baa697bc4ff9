"""Tests for ohpub.layout: where each file goes in the mirror, and why it is safe."""

from __future__ import annotations

import json
import random
import unicodedata
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ohpub.model.layout import (
    HIDDEN_DIR,
    NO_PROJECT_DIR,
    Entry,
    fold,
    plan_paths,
    sanitize_component,
)
from ohpub.model.records import parse_datafile

SAMPLE = Path("/work/shared/reference/samples/project-176-datafiles.json")
T0 = datetime(2022, 11, 15, 12, 0, tzinfo=timezone.utc)
RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{d}{n}" for d in ("COM", "LPT") for n in (*"123456789", "¹", "²", "³")
}


def entry(
    fid: int,
    basename: str,
    minutes: int = 0,
    user: str | None = "alice",
    project: int | None = 176,
) -> Entry:
    return Entry(fid, basename, T0 + timedelta(minutes=minutes), user, project)


def assert_safe_component(part: str) -> None:
    assert part not in ("", ".", "..")
    assert not part.startswith(".")
    assert not part.endswith((".", " "))
    assert not any(c in part for c in '/\\\0<>:"|?*')
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in part)
    assert len(part.encode("utf-8")) <= 255  # also proves: no lone surrogates
    assert unicodedata.is_normalized("NFC", part)
    assert part.split(".", 1)[0].rstrip(" ").upper() not in RESERVED


def assert_safe_layout(entries: list[Entry], paths: dict[int, str]) -> None:
    assert set(paths) == {e.id for e in entries}
    folded = [fold(p) for p in paths.values()]
    assert len(set(folded)) == len(folded), "two files on one path (up to case/NFC)"
    by_id = {e.id: e for e in entries}
    for fid, path in paths.items():
        parts = path.split("/")
        assert len(parts) == 3, path
        for part in parts:
            assert_safe_component(part)
        e = by_id[fid]
        assert parts[0] == (e.username if e.username is not None else HIDDEN_DIR)
        assert parts[1] == (str(e.project_id) if e.project_id is not None else NO_PROJECT_DIR)


# --- the real project-176 sample -------------------------------------------------------


def sample_entries() -> list[Entry]:
    data = json.loads(SAMPLE.read_text())
    return [Entry.of(parse_datafile(obj)) for obj in data["results"]]


def test_sample_paths_distinct_and_newest_keeps_plain_name() -> None:
    entries = sample_entries()
    paths = plan_paths(entries)
    assert len(entries) == 31
    assert len(set(paths.values())) == 31
    assert_safe_layout(entries, paths)
    groups: dict[tuple[str | None, str], list[Entry]] = defaultdict(list)
    for e in entries:
        groups[(e.username, e.basename)].append(e)
    assert sum(len(g) > 1 for g in groups.values()) >= 6
    for (user, basename), group in groups.items():
        newest, *older = sorted(group, key=lambda e: (e.created, e.id), reverse=True)
        assert paths[newest.id] == f"{user}/176/{basename}"
        for e in older:
            stem, ext = basename.rsplit(".", 1)
            assert paths[e.id] == f"{user}/176/{stem}.{e.id}.{ext}"


def test_sample_rssfed23_archives() -> None:
    paths = plan_paths(sample_entries())
    archives = {
        fid: p
        for fid, p in paths.items()
        if p.startswith("rssfed23/") and "spotify-listening-archive" in p
    }
    assert len(archives) == 4
    assert len(set(archives.values())) == 4
    assert all(p.endswith(".json") for p in archives.values())
    assert archives[57588874] == "rssfed23/176/spotify-listening-archive.57588874.json"
    assert archives[57602200] == "rssfed23/176/spotify-listening-archive.json"


# --- naming rule details ------------------------------------------------------------


@pytest.mark.parametrize(
    ("basename", "older_name"),
    [
        ("data.json", "data.11.json"),
        ("reads.fastq.gz", "reads.11.fastq.gz"),
        ("a.tar.Z", "a.11.tar.Z"),
        ("x.gz", "x.11.gz"),
        ("notes", "notes.11"),
        ("Report v1.2 final", "Report v1.2 final.11"),
        ("CON.txt", "_CON.11.txt"),
        (".bashrc", "_bashrc.11"),
    ],
)
def test_older_duplicate_gets_id_before_extension(basename: str, older_name: str) -> None:
    paths = plan_paths([entry(11, basename, 0), entry(12, basename, 5)])
    assert paths[12] == f"alice/176/{sanitize_component(basename)}"
    assert paths[11] == f"alice/176/{older_name}"


def test_tie_on_created_broken_by_id() -> None:
    paths = plan_paths([entry(20, "a.txt", 0), entry(30, "a.txt", 0)])
    assert paths == {20: "alice/176/a.20.txt", 30: "alice/176/a.txt"}


def test_literal_id_name_is_not_stolen() -> None:
    entries = [entry(57, "x.json", 0), entry(58, "x.json", 10), entry(99, "x.57.json", -5)]
    paths = plan_paths(entries)
    assert paths == {
        57: "alice/176/x.57~2.json",
        58: "alice/176/x.json",
        99: "alice/176/x.57.json",
    }
    assert_safe_layout(entries, paths)


def test_hidden_and_projectless_dirs() -> None:
    paths = plan_paths([entry(1, "a", user=None), entry(2, "a", user="bob", project=None)])
    assert paths == {1: f"{HIDDEN_DIR}/176/a", 2: f"bob/{NO_PROJECT_DIR}/a"}


def test_duplicate_ids() -> None:
    e = entry(1, "a")
    assert plan_paths([e, e]) == {1: "alice/176/a"}
    with pytest.raises(ValueError):
        plan_paths([e, entry(1, "b")])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": 0},
        {"username": "../x"},
        {"username": ""},
        {"created": datetime(2022, 1, 1)},
        {"project_id": -1},
    ],
)
def test_entry_rejects_bad_values(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "id": 1,
        "basename": "a",
        "created": T0,
        "username": "alice",
        "project_id": 1,
    }
    args.update(kwargs)
    with pytest.raises(ValueError):
        Entry(**args)  # type: ignore[arg-type]


# --- hostile names ---------------------------------------------------------------------

LONG_ASCII = "a" * 300 + ".json"
LONG_MULTI = "é" * 150 + "😀" * 30 + ".csv.gz"  # 300 + 120 bytes before the extension
HOSTILE = [
    "../../x",
    "/etc/passwd",
    "..",
    ".",
    "...",
    "a/b",
    "a\\b",
    "a\0b",
    "\0",
    "\x01\x1f\x7f\x85",
    "tab\there\nnewline",
    LONG_ASCII,
    LONG_ASCII[:-5] + "b.json",  # same 255-byte prefix as LONG_ASCII
    LONG_MULTI,
    "a" * 300,
    "CON",
    "con",
    "nul.txt",
    "Lpt9.tar.gz",
    "COM1 .txt",
    "trailing.",
    "trailing ",
    "trailing. .",
    "caf\u00e9.txt",
    "cafe\u0301.txt",
    "Data.json",
    "data.JSON",
    "x.json",
    "x.json",
    "x.57.json",
    "x.57~2.json",
    '<>:"|?*',
    "\ud800lone.txt",
    " ",
    "",
    ".ohpub",
    "ﬀ.txt",  # casefolds to "ff.txt"
    "ff.txt",
    "Straße",
    "STRASSE",
]


def hostile_entries(user: str | None = "mallory") -> list[Entry]:
    # id 57 is the older of the two "x.json" files, as in the issue.
    ids = list(range(1, len(HOSTILE) + 1))
    ids[HOSTILE.index("x.json")] = 57
    return [
        Entry(fid, name, T0 + timedelta(minutes=i), user, 176)
        for i, (fid, name) in enumerate(zip(ids, HOSTILE, strict=True))
    ]


@pytest.mark.parametrize("user", ["mallory", None])
def test_hostile_names_are_safe_and_distinct(user: str | None) -> None:
    entries = hostile_entries(user)
    paths = plan_paths(entries)
    assert len(set(paths.values())) == len(entries)
    assert_safe_layout(entries, paths)


def test_hostile_names_specifics() -> None:
    entries = hostile_entries()
    planned = plan_paths(entries)
    names: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        names[e.basename].append(planned[e.id].split("/")[2])
    # The case: the older "x.json" (id 57) must not take the literal "x.57.json",
    # and the literal "x.57~2.json" keeps its name too, so file 57 moves on to "~3".
    assert names["x.57.json"] == ["x.57.json"]
    assert names["x.57~2.json"] == ["x.57~2.json"]
    assert sorted(names["x.json"]) == ["x.57~3.json", "x.json"]
    assert names["con"] == ["_con"]  # newer than "CON", which folds to the same name
    assert names["CON"] == [f"_CON.{HOSTILE.index('CON') + 1}"]
    assert names["nul.txt"] == ["_nul.txt"]
    assert names["Lpt9.tar.gz"] == ["_Lpt9.tar.gz"]
    assert names["/etc/passwd"] == ["_etc_passwd"]
    assert names["../../x"] == ["_._.._x"]
    long_a, long_b = names[LONG_ASCII][0], names[LONG_ASCII[:-5] + "b.json"][0]
    assert long_a != long_b
    assert long_a.endswith(".json") and long_b.endswith(".json")
    assert names[LONG_MULTI][0].endswith(".csv.gz")


def test_literal_tier2_name_pushes_to_tier3() -> None:
    # "x.57~2.json" is a plain name here, so file 57 must move on to "~3".
    entries = [
        entry(57, "x.json", 0),
        entry(58, "x.json", 10),
        entry(99, "x.57.json", -5),
        entry(98, "x.57~2.json", -6),
    ]
    paths = plan_paths(entries)
    assert paths[57] == "alice/176/x.57~3.json"
    assert_safe_layout(entries, paths)


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("../../x", "_._.._x"),
        ("..", "__"),
        (".", "_"),
        ("", "_"),
        (" ", "_"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("a\0b\x1b\x7f", "a_b__"),
        ("con", "_con"),
        ("CON.txt", "_CON.txt"),
        ("conx.txt", "conx.txt"),
        ("COM¹", "_COM¹"),
        ("com0", "com0"),
        ("a. .", "a___"),
        ("cafe\u0301", "caf\u00e9"),
        ("\udcff.txt", "_.txt"),
        (".ohpub", "_ohpub"),
        ('what?*"<>|:', "what_______"),
        ("spotify-listening-archive.json", "spotify-listening-archive.json"),
    ],
)
def test_sanitize_component_examples(raw: str, safe: str) -> None:
    assert sanitize_component(raw) == safe


@pytest.mark.parametrize("name", [LONG_ASCII, LONG_MULTI, "a" * 300, "😀" * 100])
def test_long_names_cut_with_hash(name: str) -> None:
    safe = sanitize_component(name)
    assert 240 <= len(safe.encode()) <= 255
    assert_safe_component(safe)
    other = sanitize_component(name + "x")
    assert other != safe


def test_long_id_names_fit() -> None:
    entries = [entry(123456789012, LONG_MULTI, 0), entry(123456789013, LONG_MULTI, 1)]
    paths = plan_paths(entries)
    older = paths[123456789012].split("/")[2]
    assert older.endswith(".123456789012.csv.gz")
    assert_safe_layout(entries, paths)


def test_case_and_normalization_twins_collide() -> None:
    assert fold("Data.json") == fold("data.JSON")
    assert fold("caf\u00e9") == fold("cafe\u0301")
    assert fold("Straße") == fold("STRASSE")
    for older, newer, renamed in [
        ("Data.json", "data.JSON", "Data.1.json"),
        ("caf\u00e9.txt", "cafe\u0301.txt", "caf\u00e9.1.txt"),
        ("cafe\u0301.txt", "caf\u00e9.txt", "caf\u00e9.1.txt"),
    ]:
        paths = plan_paths([entry(1, older, 0), entry(2, newer, 1)])
        assert paths == {1: f"alice/176/{renamed}", 2: f"alice/176/{sanitize_component(newer)}"}


# --- properties ------------------------------------------------------------------------

HOSTILE_ALPHABET = [
    "a", "b", "A", "B", ".", ".", " ", "/", "\\", "\0", "\x01", "\x7f", "\x9b", ":", "*",
    "é", "e\u0301", "\u0301", "ß", "ſ", "K", "\u212a", "ﬀ", "😀", "\ud800", "~", "5", "7",
    "_", "-", "\u3000", "\u202e",
]  # fmt: skip
USERS = [None, "alice", "Bob", "c_9"]  # distinct under case folding
PROJECTS = [None, 176, 1]
TIMES = [T0 + timedelta(minutes=m) for m in (0, 0, 1, 2, 60)]

base_names = st.one_of(
    st.sampled_from(["x.json", "X.JSON", "data", "CON", "nul.txt", "..", ".", "", "a.tar.gz"]),
    st.lists(st.sampled_from(HOSTILE_ALPHABET), max_size=10).map("".join),
    st.text(max_size=8),
    st.builds(lambda i: f"x.{i}.json", st.integers(1, 40)),
    st.builds(lambda i, k: f"x.{i}~{k}.json", st.integers(1, 40), st.integers(2, 4)),
    st.builds(
        lambda c, n, ext: c * n + ext,
        st.sampled_from(["a", "é", "😀", "."]),
        st.integers(60, 300),
        st.sampled_from(["", ".json", ".fastq.gz"]),
    ),
)


@st.composite
def entry_sets(draw: st.DrawFn, max_size: int = 24) -> list[Entry]:
    pool = draw(st.lists(base_names, min_size=1, max_size=6))
    ids = draw(st.lists(st.integers(1, 40), max_size=max_size, unique=True))
    return [
        Entry(
            fid,
            draw(st.sampled_from(pool)),
            draw(st.sampled_from(TIMES)),
            draw(st.sampled_from(USERS)),
            draw(st.sampled_from(PROJECTS)),
        )
        for fid in ids
    ]


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(entry_sets(), st.randoms(use_true_random=False))
def test_property_safe_injective_order_independent(
    entries: list[Entry], rnd: random.Random
) -> None:
    paths = plan_paths(entries)
    assert_safe_layout(entries, paths)
    shuffled = entries[:]
    rnd.shuffle(shuffled)
    assert plan_paths(shuffled) == paths
    assert plan_paths(reversed(entries)) == paths


@FAST
@given(entry_sets())
def test_property_newest_keeps_plain_name_older_get_id(entries: list[Entry]) -> None:
    paths = plan_paths(entries)
    groups: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in entries:
        groups[(e.directory, fold(sanitize_component(e.basename)))].append(e)
    for (directory, _), group in groups.items():
        newest, *older = sorted(group, key=lambda e: (e.created, e.id), reverse=True)
        assert paths[newest.id] == f"{directory}/{sanitize_component(newest.basename)}"
        for e in older:
            assert f".{e.id}" in paths[e.id].split("/")[2]


@FAST
@given(entry_sets(), entry_sets(max_size=4))
def test_property_other_directory_never_moves_paths(
    entries: list[Entry], extra: list[Entry]
) -> None:
    paths = plan_paths(entries)
    dirs = {e.directory for e in entries}
    ids = {e.id for e in entries}
    added = [
        Entry(e.id + 1000, e.basename, e.created, "zed", e.project_id)
        for e in extra
        if e.directory not in dirs
    ] + [Entry(e.id + 2000, e.basename, e.created, None, 999) for e in extra]
    assert not ids & {e.id for e in added}
    grown = plan_paths(entries + added)
    assert {fid: grown[fid] for fid in paths} == paths


@FAST
@given(entry_sets(), base_names, st.sampled_from(TIMES))
def test_property_same_directory_moves_only_displaced(
    entries: list[Entry], basename: str, created: datetime
) -> None:
    # Adding a file moves nothing unless its own new path takes one another file had.
    new = Entry(99, basename, created, "alice", 176)
    before = plan_paths(entries)
    after = plan_paths([*entries, new])
    moved = {fid for fid in before if before[fid] != after[fid]}
    if fold(after[99]) not in {fold(p) for p in before.values()}:
        assert not moved
    else:
        assert moved


@FAST
@given(st.one_of(base_names, st.text()))
def test_property_sanitize_safe_and_idempotent(name: str) -> None:
    safe = sanitize_component(name)
    assert_safe_component(safe)
    assert sanitize_component(safe) == safe
