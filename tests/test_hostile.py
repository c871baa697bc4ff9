"""Hostile input (issue 4): uploader-chosen names, planted symlinks, hostile redirects,
and download keys that must never be printed (malformed records: test_hostile_records.py).

Everything runs against the local Open Humans server; the "attacker" is whoever controls
a basename, a listing record, a redirect, or a symlink inside DEST.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FAST_RETRY, add_big_file, content_of, jsonl, run_cli, tree

HOSTILE_NAMES = [
    "../../x",
    "../../../../../../tmp/ohpub-escape",
    "/etc/passwd",
    "..",
    ".",
    "...",
    ".ohpub",
    "a/b",
    "a\\b",
    "nul\x00byte.txt",
    "ctl\x01\x1b[31m\x7f\x9b.txt",
    "line\nbreak\r.txt",
    "x" * 300,
    "é" * 200 + ".json",
    "CON",
    "NUL",
    "nul.txt",
    "com1.json",
    "trailing.",
    "trailing ",
    "trailing. . ",
    "caf\u00e9.txt",  # NFC
    "cafe\u0301.txt",  # NFD twin
    "Data.json",
    "data.json",
    "DATA.JSON",
    "index.jsonl",
    " ",
    'a:b*c?d<e>f|g"h',
]


def mirror(server: Any, dest: Path, *args: str, **kw: Any) -> Any:
    return run_cli(server, ["mirror", str(dest), *args], env=FAST_RETRY, **kw)


def outside_snapshot(root: Path, dest: Path) -> dict[str, bytes]:
    """Every file under ``root`` outside ``dest`` (to prove nothing was written there)."""
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        if p == dest or dest in p.parents or not p.is_file() or p.is_symlink():
            continue
        out[str(p)] = p.read_bytes()
    return out


# -- hostile basenames -----------------------------------------------------------------------


def test_hostile_basenames_are_stored_on_distinct_safe_paths_inside_dest(
    oh_server: Any, tmp_path: Path
) -> None:
    oh_server.add_project(700, "Hostile")
    ids = {}
    for i, name in enumerate(HOSTILE_NAMES):
        ids[name] = oh_server.add_file(
            basename=name,
            content=f"file {i}: {name!r}\n".encode("utf-8", "surrogatepass"),
            project_id=700,
            username="bob_smith",
        )
    box = tmp_path / "box"
    dest = box / "dest"
    box.mkdir()
    res = mirror(oh_server, dest, "-p", "700", "-f", "jsonl")
    assert res.code == 0, res.stderr
    recs = {r["id"]: r for r in jsonl(res.stdout)}
    assert len(recs) == len(HOSTILE_NAMES)
    assert {r["status"] for r in recs.values()} == {"downloaded"}
    paths = [r["path"] for r in recs.values()]
    folded = {unicodedata.normalize("NFC", p).casefold() for p in paths}
    assert len(folded) == len(paths)  # distinct even on case-insensitive, normalizing disks
    real_dest = os.path.realpath(dest)
    for name, fid in ids.items():
        rel = recs[fid]["path"]
        parts = rel.split("/")
        assert parts[:2] == ["bob_smith", "700"] and len(parts) == 3, (name, rel)
        leaf = parts[2]
        assert leaf not in (".", "..", "") and not leaf.startswith(".")
        assert len(leaf.encode()) <= 255
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in leaf)
        assert not any(c in '\\<>:"|?*' for c in leaf)
        assert leaf == unicodedata.normalize("NFC", leaf)
        assert leaf.split(".")[0].upper() not in ("CON", "NUL", "COM1")
        assert not leaf.endswith((".", " "))
        full = dest / rel
        assert os.path.realpath(full).startswith(real_dest + os.sep)
        assert full.read_bytes() == content_of(oh_server, fid), name
    # Nothing outside DEST, and DEST holds exactly these files (plus index.jsonl and .ohpub).
    assert sorted(p.name for p in box.iterdir()) == ["dest"]
    assert not Path("/tmp/ohpub-escape").exists()
    assert sorted(tree(dest)) == sorted(paths)
    assert sorted(os.listdir(dest)) == [".ohpub", "bob_smith", "index.jsonl"]
    ver = run_cli(oh_server, ["verify", str(dest), "-f", "jsonl"])
    assert ver.code == 0 and {r["status"] for r in jsonl(ver.stdout)} == {"ok"}
    again = mirror(oh_server, dest, "-p", "700", "-f", "jsonl")
    assert again.code == 0 and {r["status"] for r in jsonl(again.stdout)} == {"unchanged"}


def test_hostile_basenames_with_fetch(oh_server: Any, tmp_path: Path) -> None:
    oh_server.add_project(700, "Hostile")
    ids = [
        oh_server.add_file(
            basename=n, content=n.encode("utf-8", "surrogatepass"), project_id=700, username="dave"
        )
        for n in ("../../x", "/etc/passwd", "..", "a/b")
    ]
    out = tmp_path / "out"
    res = run_cli(oh_server, ["fetch", *map(str, ids), "-d", str(out)])
    assert res.code == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert len(list(out.iterdir())) == 4
    assert all(p.is_file() and not p.name.startswith(".") for p in out.iterdir())


# -- planted symlinks ------------------------------------------------------------------------


def _plant_user_dir(dest: Path, outside: Path) -> Path:
    os.symlink(outside, dest / "alice")
    return outside


def _plant_project_dir(dest: Path, outside: Path) -> Path:
    (dest / "alice").mkdir(exist_ok=True)
    os.symlink(outside, dest / "alice/102")
    return outside


def _plant_final_path(dest: Path, outside: Path) -> Path:
    (dest / "alice/102").mkdir(parents=True, exist_ok=True)
    os.symlink(outside / "victim.txt", dest / "alice/102/fitbit-data.json")
    return outside


def _plant_ohpub_internals(dest: Path, outside: Path) -> Path:
    """Symlinks at the names ohpub writes inside DEST/.ohpub: partial files, their sidecars
    and the sidecars' temporary files, the index's temporary file (symlinks at ``.ohpub``,
    the lock, the partial folder and the state database: tests/test_security.py)."""
    (dest / ".ohpub/partial").mkdir(parents=True, exist_ok=True)
    for fid in (1, 2):
        os.symlink(outside / "victim.txt", dest / ".ohpub/partial" / str(fid))
        os.symlink(outside / "victim.txt", dest / ".ohpub/partial" / f"{fid}.json")
        os.symlink(outside / "victim.txt", dest / ".ohpub/partial" / f"{fid}.json.tmp")
    os.symlink(outside / "victim.txt", dest / ".ohpub/index.jsonl.tmp")
    return outside


PLANTS = [
    pytest.param(_plant_user_dir, id="user-dir"),
    pytest.param(_plant_project_dir, id="project-dir"),
    pytest.param(_plant_final_path, id="final-path"),
    pytest.param(_plant_ohpub_internals, id="ohpub-internals"),
]


@pytest.mark.parametrize("plant", PLANTS)
@pytest.mark.parametrize("when", ["fresh-dest", "existing-mirror"])
def test_planted_symlink_never_leads_a_write_outside_dest(
    oh_server: Any, tmp_path: Path, plant: Callable[[Path, Path], Path], when: str
) -> None:
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_bytes(b"precious\n")
    dest.mkdir()
    if when == "existing-mirror":
        assert mirror(oh_server, dest, "-p", "102").code == 0
        # Clear the planted spot (a user who deletes a directory or file by hand).
        for rel in ("alice/102/fitbit-data.json", "alice/102/fitbit-data.1.json"):
            (dest / rel).unlink(missing_ok=True)
        if plant in (_plant_user_dir, _plant_project_dir):
            target = dest / ("alice" if plant is _plant_user_dir else "alice/102")
            for p in sorted(target.rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            target.rmdir()
    before = outside_snapshot(tmp_path, dest)
    plant(dest, outside)
    res = mirror(oh_server, dest, "-p", "102")
    assert "Traceback" not in res.stderr
    assert outside_snapshot(tmp_path, dest) == before  # nothing written outside DEST
    assert sorted(os.listdir(outside)) == ["victim.txt"]
    assert (outside / "victim.txt").read_bytes() == b"precious\n"
    if plant in (_plant_final_path, _plant_ohpub_internals):
        # The symlink is replaced by the real file, never followed.
        assert res.code == 0, res.stderr
        target = dest / "alice/102/fitbit-data.json"
        assert not target.is_symlink() and target.read_bytes() == content_of(oh_server, 2)
    else:
        # ohpub refuses to write through a symlinked directory: those files fail, by name.
        assert res.code == 1
        assert "symlink" in res.stderr and "alice" in res.stderr
        assert (dest / "bob_smith/102/fitbit-data.json").read_bytes() == content_of(oh_server, 4)


def test_symlink_at_a_tracked_path_is_reported_by_verify(oh_server: Any, tmp_path: Path) -> None:
    assert mirror(oh_server, tmp_path / "m", "-p", "102").code == 0
    victim = tmp_path / "victim.txt"
    victim.write_bytes(content_of(oh_server, 4))  # even the right bytes, behind a symlink
    tracked = tmp_path / "m/bob_smith/102/fitbit-data.json"
    tracked.unlink()
    os.symlink(victim, tracked)
    ver = run_cli(oh_server, ["verify", str(tmp_path / "m"), "-f", "jsonl"])
    assert ver.code == 1
    by_path = {r["path"]: r["status"] for r in jsonl(ver.stdout)}
    assert by_path["bob_smith/102/fitbit-data.json"] == "missing"


# -- malformed listing records: tests/test_hostile_records.py -----------------------------


# -- hostile redirects -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "javascript:alert(1)",
        "gopher://127.0.0.1:70/x",
        "//",
        "http://",
    ],
)
def test_redirect_to_a_non_http_scheme_is_refused(
    oh_server: Any, tmp_path: Path, location: str
) -> None:
    oh_server.faults.redirect_location = location
    res = mirror(oh_server, tmp_path, "-p", "128")
    assert res.code == 1
    assert "Traceback" not in res.stderr
    assert "refusing redirect" in res.stderr or "too many redirects" in res.stderr
    assert tree(tmp_path) == {}
    assert oh_server.count(role="storage") == 0
    oh_server.faults.clear()
    again = mirror(oh_server, tmp_path, "-p", "128")
    assert again.code == 0, again.stderr


def test_redirect_chain_to_a_non_http_scheme_is_refused(oh_server: Any, tmp_path: Path) -> None:
    from urllib.parse import urlencode

    oh_server.faults.redirect_location = f"{oh_server.base_url}/redirect/2?" + urlencode(
        {"to": "file:///etc/passwd"}
    )
    res = mirror(oh_server, tmp_path, "-p", "128")
    assert res.code == 1 and "refusing redirect" in res.stderr
    assert tree(tmp_path) == {}


def test_a_few_redirect_hops_are_followed_too_many_refused(oh_server: Any, tmp_path: Path) -> None:
    oh_server.faults.redirect_hops = 2
    ok = mirror(oh_server, tmp_path / "ok", "-p", "128")
    assert ok.code == 0, ok.stderr
    assert tree(tmp_path / "ok")["bob_smith/128/taxonomy-summary.tsv"] == content_of(oh_server, 5)
    oh_server.faults.redirect_hops = 10
    oh_server.clear_log()
    res = mirror(oh_server, tmp_path / "loop", "-p", "128", "--name", "taxonomy*")
    assert res.code == 1
    assert "too many redirects" in res.stderr
    assert tree(tmp_path / "loop") == {}
    assert oh_server.count(role="download", path_prefix="/redirect/") <= 4  # gave up early


# -- download keys are never printed ---------------------------------------------------------


def test_download_keys_never_appear_in_output_logs_or_files(oh_server: Any, tmp_path: Path) -> None:
    """Run through failures, refused keys, expired keys, retries, redirects and --verbose,
    then look for every key the server ever minted in everything ohpub wrote."""
    big = add_big_file(oh_server, 1_500_000)
    oh_server.faults.redirect_hops = 2
    oh_server.faults.script(role="download", statuses=[403, 503])
    oh_server.faults.script(role="storage", statuses=[503, 403])
    oh_server.faults.reset_after[big] = (500_000, 1)
    oh_server.faults.corrupt.add(5)
    oh_server.storage_missing.add(4)
    log_file = tmp_path / "ohpub.log"
    dest = tmp_path / "m"
    outputs = []
    for args in (
        ["--verbose", "mirror", str(dest), "-p", "128", "-p", "102", "-p", "600"],
        ["--verbose", "mirror", str(dest), "-p", "128", "-f", "jsonl"],
        ["--verbose", "list", "-p", "128", "-f", "table"],
        ["--verbose", "fetch", "5", "-d", str(tmp_path / "f")],
        ["--verbose", "fetch", "1", "-o", "-"],
    ):
        res = run_cli(oh_server, args, env={**FAST_RETRY, "OHPUB_LOG_FILE": str(log_file)})
        outputs.append(res.stderr)
        if "fetch" not in args and "list" not in args:
            outputs.append(res.stdout)
    oh_server.faults.clear()
    oh_server.faults.redirect_location = "file:///etc/passwd"
    res = run_cli(oh_server, ["--verbose", "mirror", str(tmp_path / "m2"), "-p", "128"])
    outputs += [res.stderr, res.stdout]
    assert any("HTTP" in o or "GET" in o for o in outputs)  # verbose really logged requests
    with oh_server._lock:
        keys = list(oh_server._keys)
    assert len(keys) > 10
    written = "\n".join(outputs)
    for p in tmp_path.rglob("*"):
        if p.is_file() and p.stat().st_size < 5_000_000:
            written += "\n" + p.read_bytes().decode("utf-8", "replace")
    leaked = [k for k in keys if k in written or k.replace("-", "") in written]
    assert leaked == []
    sigs = [e.query.get("Signature") for e in oh_server.log if e.role == "storage"]
    assert not [s for s in sigs if s and len(s) > 8 and s in written]


def test_list_table_and_csv_show_no_full_keys(oh_server: Any) -> None:
    """``download_url`` is in the json/jsonl records by design (the server's own field, for
    scripts that download it themselves); the table omits it."""
    res = run_cli(oh_server, ["list", "-p", "102", "-f", "table"])
    assert res.code == 0
    with oh_server._lock:
        keys = list(oh_server._keys)
    assert keys and not [k for k in keys if k in res.stdout]


def test_keys_are_redacted_even_percent_encoded(oh_server: Any, tmp_path: Path) -> None:
    from ohpub.remote.http import redact

    key = "2fb27e2d-1234-4abc-9def-0123456789ab"
    for text in (
        f"https://x/?key={key}",
        f"https://x/?a=1&KEY={key}&b=2",
        f"/redirect/2?to=http%3A%2F%2Fs%2Fo%3FSignature%3Dabc%26x-oh-key%3D{key}",
        f"to=http%3A%2F%2Fs%2Fo%3Fx-oh-key%253D{key}",
    ):
        assert key not in redact(text), text
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert redact(f"sha256={digest}") == f"sha256={digest}"  # not everything is a secret
