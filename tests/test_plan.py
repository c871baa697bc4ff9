"""The plan: the dry run and the real run agree, file by file (issue 9).

Named regressions first (each failed on 0.2.0), then a hypothesis property: for random
mirrors and random local and upstream changes, the action the dry run reports for every
file is what the real run right after it does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import FAST_RETRY, add_big_file, content_of, jsonl, run_cli, start_mirror, tree
from tests.ohserver import OHServer
from tests.test_crash import wait_until

EXAMPLES = int(os.environ.get("OHPUB_PLAN_EXAMPLES", "25"))

DRY_TO_REAL = {"planned": {"downloaded", "resumed"}}
"""A dry run says ``planned`` where the real run says ``downloaded`` (or ``resumed``); every
other status is the same word in both."""


def _statuses(out: str) -> dict[Any, str]:
    return {r["id"]: r["status"] for r in jsonl(out) if r.get("status") != "totals"}


def _dry_and_real(server: Any, dest: Path, *args: str) -> tuple[dict[Any, str], dict[Any, str]]:
    dry = run_cli(server, ["mirror", str(dest), "-f", "jsonl", "--dry-run", *args], env=FAST_RETRY)
    assert "Traceback" not in dry.stderr
    real = run_cli(server, ["mirror", str(dest), "-f", "jsonl", *args], env=FAST_RETRY)
    assert "Traceback" not in real.stderr
    return _statuses(dry.stdout), _statuses(real.stdout)


def _run(server: Any, dest: Path, *args: str) -> Any:
    return run_cli(server, ["mirror", str(dest), "-f", "jsonl", *args], env=FAST_RETRY)


def _agree(dry: dict[Any, str], real: dict[Any, str]) -> None:
    assert dry.keys() == real.keys()
    for fid, planned in dry.items():
        assert real[fid] in DRY_TO_REAL.get(planned, {planned}), (fid, planned, real[fid])


# -- the named regressions --------------------------------------------------------------------


def test_dry_run_agrees_after_touch(oh_server: Any, tmp_path: Path) -> None:
    """Same bytes, new mtime: 0.2.0's dry run planned a download; the real run re-hashed and
    kept the file. Both must say unchanged, and neither asks storage for it."""
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    f = next(p for p in tmp_path.rglob("*.json") if ".ohpub" not in p.parts)
    os.utime(f, (time.time() + 100, time.time() + 100))
    t0 = time.time()
    dry, real = _dry_and_real(oh_server, tmp_path, "-p", "102")
    assert set(dry.values()) == {"unchanged"}
    _agree(dry, real)
    assert not [e for e in oh_server.log if e.role == "storage" and e.start >= t0]


def test_dry_run_agrees_for_relisted_removed_upstream(oh_server: Any, tmp_path: Path) -> None:
    """A file marked removed-upstream that comes back (sharing restarted) is kept as it is:
    0.2.0's dry run planned to download it again."""
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    oh_server.stop_sharing("alice")
    first = _statuses(
        run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102", "-f", "jsonl"]).stdout
    )
    assert "removed-upstream" in first.values()
    oh_server.start_sharing("alice")
    dry, real = _dry_and_real(oh_server, tmp_path, "-p", "102")
    assert set(dry.values()) == {"unchanged"}
    _agree(dry, real)


def test_other_scope_keeps_resumable_partials(oh_server: Any, tmp_path: Path) -> None:
    """``mirror -p 600`` killed mid-file, then ``mirror -p 102``, then ``mirror -p 600``: the
    file resumes (0.2.0's second run deleted the partial of a file outside its scope)."""
    fid = add_big_file(oh_server, 3_000_000)
    oh_server.faults.bandwidth = 1_500_000
    proc = start_mirror(oh_server, tmp_path, "-p", "600")
    part = tmp_path / ".ohpub/partial" / str(fid)
    wait_until(lambda: part.exists() and part.stat().st_size >= 1_100_000)
    proc.kill()
    proc.communicate(timeout=30)
    oh_server.faults.bandwidth = None
    kept = part.stat().st_size
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"], env=FAST_RETRY).code == 0
    assert part.exists() and part.stat().st_size == kept
    res = run_cli(oh_server, ["mirror", str(tmp_path), "-p", "600", "-f", "jsonl"], env=FAST_RETRY)
    assert res.code == 0, res.stderr
    assert [r["status"] for r in jsonl(res.stdout)] == ["resumed"]
    assert (tmp_path / "alice/600/big.bin").read_bytes() == content_of(oh_server, fid)


def test_checksum_repairs_an_edit_that_keeps_size_and_mtime(oh_server: Any, tmp_path: Path) -> None:
    """An edit that keeps size and mtime is invisible to the fingerprint; ``--checksum``
    re-hashes every placed file and downloads that one again (issue 14 item 6)."""
    assert run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102"]).code == 0
    f = tmp_path / "alice/102/fitbit-data.json"
    st = f.stat()
    data = f.read_bytes()
    f.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    plain = _statuses(
        run_cli(oh_server, ["mirror", str(tmp_path), "-p", "102", "-f", "jsonl"]).stdout
    )
    assert set(plain.values()) == {"unchanged"}  # the fingerprint cannot see it
    dry, real = _dry_and_real(oh_server, tmp_path, "-p", "102", "--checksum")
    _agree(dry, real)
    assert sorted(real.values()).count("downloaded") == 1
    assert f.read_bytes() == data


# -- the property -------------------------------------------------------------------------

MEMBERS = ("ann", "ben")
NAMES = ("data.json", "Data.json", "notes.txt")

changes = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "touch",
                "edit",
                "remove_local",
                "delete_upstream",
                "add_same_name",
                "stop_sharing",
                "restart_sharing",
                "unavailable",
            ]
        ),
        st.integers(0, 20),
    ),
    max_size=6,
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("OHPUB_PLAN_RANDOM", "") in ("", "0"),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    files=st.lists(
        st.tuples(st.sampled_from(MEMBERS), st.sampled_from(NAMES), st.integers(0, 3000)),
        min_size=1,
        max_size=6,
    ),
    ops=changes,
    delete=st.booleans(),
)
def test_dry_run_action_is_what_the_real_run_does(
    files: list[tuple[str, str, int]], ops: list[tuple[str, int]], delete: bool
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ohpub-plan-"))
    dest = tmp / "m"
    with OHServer(seed=2) as server:
        server.add_project(300, "P")
        for m in MEMBERS:
            server.add_member(m, m.title())
        ids = [_add(server, m, n, size, i) for i, (m, n, size) in enumerate(files)]
        assert run_cli(server, ["mirror", str(dest)], env=FAST_RETRY).code == 0
        for op, k in ops:
            _change(server, dest, ids, op, k)
        args = ["--delete"] if delete else []
        dry, real = _dry_and_real(server, dest, *args)
        _agree(dry, real)
        assert tree(dest) or not real  # something is there whenever something is listed
    shutil.rmtree(tmp, ignore_errors=True)


def _add(server: Any, member: str, name: str, size: int, n: int) -> int:
    body = (f"{n}:{member}:{name}\n".encode() * (size // 8 + 1))[:size]
    return int(server.add_file(basename=name, content=body, project_id=300, username=member))


def _change(server: Any, dest: Path, ids: list[int], op: str, k: int) -> None:
    placed = sorted(p for p in dest.rglob("*") if p.is_file() and ".ohpub" not in p.parts)
    placed = [p for p in placed if p.name != "index.jsonl"]
    if op in ("touch", "edit", "remove_local") and placed:
        p = placed[k % len(placed)]
        if op == "touch":
            os.utime(p, (time.time() + 50 + k, time.time() + 50 + k))
        elif op == "edit":
            p.write_bytes(p.read_bytes() + b"!")
        else:
            p.unlink()
    elif op == "delete_upstream" and ids:
        server.delete_file(ids.pop(k % len(ids)))
    elif op == "add_same_name":
        ids.append(_add(server, MEMBERS[k % 2], NAMES[k % 3], 100 + k, 100 + k))
    elif op == "stop_sharing":
        server.stop_sharing(MEMBERS[k % 2])
    elif op == "restart_sharing":
        server.start_sharing(MEMBERS[k % 2])
    elif op == "unavailable" and ids:
        server.set_available(ids[k % len(ids)], False)
