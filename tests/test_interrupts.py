"""One cancel token from Ctrl-C to every wait (issue 18): a real ``ohpub`` process, a real
signal, in every phase of a mirror.

Each test starts ``python -m ohpub mirror`` against the local server, waits until the run
is in the phase under test (seen from the server's request log or from DEST), sends SIGINT
or SIGTERM, and asserts what a user sees: the exit code (130, 143; never 0), one
``ohpub: interrupted`` line and no traceback, nothing incomplete at a final path, and a
rerun that completes with every file verified. Where waiting out a backoff would have cost
requests, the server's log shows that the run ended without making them. No test measures
time: ``scripts/interrupt_latency.py`` does that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    FAST_RETRY,
    REPO,
    add_big_file,
    content_of,
    handlers_installed,
    jsonl,
    run_cli,
    start_mirror,
    storage_gets_of,
    tree,
)
from tests.test_crash import FinalPathWatcher, assert_consistent, partials, wait_until


class PlacedWatcher(FinalPathWatcher):
    """``FinalPathWatcher`` that hashes a file only when it is new at its path (a placed
    file is never written again: a rename puts another inode there), so that watching
    twenty runs costs the machine little."""

    def _loop(self) -> None:
        known: dict[str, tuple[int, int, int]] = {}
        while not self._stop.is_set():
            for root, dirs, files in os.walk(self.dest):
                if root == str(self.dest):
                    dirs[:] = [d for d in dirs if d != ".ohpub"]
                    files = [f for f in files if f != "index.jsonl"]
                for name in files:
                    p = Path(root) / name
                    try:
                        st = p.stat()
                        key = (st.st_ino, st.st_size, st.st_mtime_ns)
                        if known.get(str(p)) == key:
                            continue
                        data = p.read_bytes()
                    except OSError:
                        continue
                    known[str(p)] = key
                    self.seen += 1
                    if hashlib.sha256(data).hexdigest() not in self.good:
                        self.bad.append(f"{p.relative_to(self.dest)} ({len(data)} bytes)")
            time.sleep(0.005)

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """Wait for the process (a hang guard, not a timing assertion); its code and stderr."""
    _out, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode("utf-8", "replace")


def assert_interrupted(code: int, err: str, sig: int) -> None:
    assert code == EXIT[sig], err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("ohpub: interrupted"), err
    assert sum(ln.startswith("ohpub: interrupted") for ln in lines) == 1, err


def rerun_completes(server: Any, dest: Path, ids: list[int], *args: str) -> list[dict[str, Any]]:
    res = run_cli(server, ["mirror", str(dest), *args, "-f", "jsonl"], env=FAST_RETRY)
    assert res.code == 0, res.stderr
    assert_consistent(server, dest, ids)
    assert partials(dest) == []
    return jsonl(res.stdout)


def storage_after(server: Any, t: float) -> list[Any]:
    return [e for e in list(server.log) if e.role == "storage" and e.start >= t]


# -- the backoff wait ---------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_in_a_storage_backoff_ends_the_run_without_waiting_it_out(
    oh_server: Any, tmp_path: Path, sig: int
) -> None:
    """Storage answers 503 with ``Retry-After: 20``. 0.3.0 slept the 20 s out after Ctrl-C,
    asked again (503 again), slept again, and exited 130 after 40 s and two more requests."""
    fid = add_big_file(oh_server, 300_000)
    oh_server.faults.script(role="storage", statuses=[503, 503, 503], retry_after=20)
    proc = start_mirror(oh_server, tmp_path, "-p", "600")
    wait_until(lambda: any(e.role == "storage" and e.status == 503 for e in list(oh_server.log)))
    time.sleep(0.2)  # the worker is in its 20 s wait now
    sent = time.time()
    proc.send_signal(sig)
    code, err = finish(proc)
    assert_interrupted(code, err, sig)
    assert storage_after(oh_server, sent) == []  # no request made after waiting the 20 s
    assert len([e for e in oh_server.log if e.role == "storage"]) == 1
    assert tree(tmp_path) == {}
    st = json.loads(run_cli(oh_server, ["status", str(tmp_path), "-f", "json"]).stdout)
    assert st["last_run"]["outcome"] == "interrupted"
    oh_server.faults.clear()
    recs = rerun_completes(oh_server, tmp_path, [fid], "-p", "600")
    assert [r["status"] for r in recs] == ["downloaded"]


def test_a_signal_in_a_listing_backoff_ends_the_run_without_waiting_it_out(
    oh_server: Any, tmp_path: Path
) -> None:
    ids = oh_server.generate(4, 2, 2000, 5000, project_id=300, seed=2)
    oh_server.faults.script(role="api", path_regex="datafiles", statuses=[503] * 5, retry_after=20)
    proc = start_mirror(oh_server, tmp_path, "-p", "300")
    wait_until(lambda: any(e.role == "api" and e.status == 503 for e in list(oh_server.log)))
    time.sleep(0.2)
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc)
    assert_interrupted(code, err, signal.SIGINT)
    assert [e for e in list(oh_server.log) if e.start >= sent] == []
    assert tree(tmp_path) == {}
    oh_server.faults.clear()
    rerun_completes(oh_server, tmp_path, ids, "-p", "300")


# -- an error while placing ---------------------------------------------------------------------


def test_an_error_while_placing_stops_the_transfers_in_flight_at_once(
    oh_server: Any, tmp_path: Path
) -> None:
    """The state database is locked by another program (a ``sqlite3`` shell with an open
    transaction) when the first finished file is to be placed: the run fails with a
    StateError. 0.3.0 then waited for the 8 MB transfer still in flight to finish before
    reporting it; the run must stop that transfer at once instead."""
    big = add_big_file(oh_server, 8_000_000, basename="big.bin")
    small = oh_server.add_file(
        basename="small.txt", content=b"s" * 50_000, project_id=600, username="bob_smith"
    )
    oh_server.faults.bandwidth = 250_000  # the big one needs 32 s
    oh_server.faults.stall[small] = (1000, 2.0, 1)  # the small one finishes after the listing
    proc = start_mirror(oh_server, tmp_path, "-p", "600", "-j", "2")
    db = tmp_path / ".ohpub" / "state.sqlite3"

    def listed() -> bool:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as c:
                return c.execute("SELECT count(*) FROM files").fetchone()[0] == 2
        except sqlite3.Error:
            return False

    wait_until(listed)
    blocker = sqlite3.connect(db, timeout=30, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # what a sqlite3 shell in a transaction holds
    try:
        # Held until the run let go of the big transfer (or finished it: the old code).
        wait_until(lambda: bool(storage_gets_of(oh_server, big)), timeout=90)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    code, err = finish(proc)
    assert code == 1, err
    assert "Traceback" not in err and "ohpub: error: state database" in err, err
    (get,) = storage_gets_of(oh_server, big)
    assert get.bytes_sent < 8_000_000  # stopped at once, not carried to its end
    oh_server.faults.clear()
    recs = rerun_completes(oh_server, tmp_path, [big, small], "-p", "600")
    assert {r["id"]: r["status"] for r in recs}[big] == "resumed"


# -- the listing --------------------------------------------------------------------------------


def test_a_signal_while_listing_pages_are_in_flight(oh_server: Any, tmp_path: Path) -> None:
    ids = oh_server.generate(6, 2, 2000, 5000, project_id=300, seed=3)
    oh_server.faults.latency["api"] = 3.0  # every page takes 3 s to answer
    proc = start_mirror(oh_server, tmp_path, "-p", "300")
    wait_until(lambda: oh_server.in_flight["api"] > 0)
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc)
    assert_interrupted(code, err, signal.SIGINT)
    assert not [e for e in list(oh_server.log) if e.role == "storage"]
    assert tree(tmp_path) == {}
    oh_server.faults.clear()
    rerun_completes(oh_server, tmp_path, ids, "-p", "300")


# -- transfers, at random moments ---------------------------------------------------------------


def _partial_facts(dest: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in partials(dest):
        with contextlib.suppress(OSError):
            st = p.stat()
            out[p.name] = (st.st_size, st.st_mtime_ns)
    return out


def _interrupt_runs(server: Any, dest: Path, ids: list[int], lane: int, runs: int) -> list[str]:
    """``runs`` mirrors of ``dest`` in a row, each signalled at a random moment once its
    bytes flow (a partial file of this DEST grows); what went wrong, if anything."""
    rng = random.Random(lane)
    problems: list[str] = []
    with PlacedWatcher(dest, [content_of(server, i) for i in ids]) as watcher:
        for n in range(runs):
            sig = signal.SIGTERM if n % 4 == lane else signal.SIGINT
            before = _partial_facts(dest)
            proc = start_mirror(server, dest, "-p", "600", "-j", "3")
            wait_until(lambda b=before: any(b.get(k) != v for k, v in _partial_facts(dest).items()))
            time.sleep(rng.uniform(0, 0.3))
            proc.send_signal(sig)
            code, err = finish(proc)
            try:
                assert_interrupted(code, err, sig)
            except AssertionError as exc:
                problems.append(f"lane {lane} run {n}: {exc}")
    return problems + [f"lane {lane}: incomplete at a final path: {b}" for b in watcher.bad]


def test_signals_at_random_moments_of_transfers_then_a_rerun_completes(
    oh_server: Any, tmp_path: Path
) -> None:
    """Twenty runs, each stopped by SIGINT or SIGTERM at a random moment of its transfers
    (two DESTs at a time, ten runs in a row on each): each exits 130 or 143 with one line,
    no file at a final path is ever incomplete, and the run after them completes with
    every file verified (big partials resumed, not started over)."""
    ids = [add_big_file(oh_server, 1_500_000, seed=i, basename=f"big{i}.bin") for i in range(4)]
    ids += [add_big_file(oh_server, 400_000, seed=9 + i, basename=f"s{i}.bin") for i in range(4)]
    oh_server.faults.bandwidth = 400_000
    dests = [tmp_path / "a", tmp_path / "b"]
    for d in dests:
        d.mkdir()
    with ThreadPoolExecutor(2) as lanes:
        runs = [
            lanes.submit(_interrupt_runs, oh_server, d, ids, k, 10)
            for k, d in enumerate(dests)
        ]
        problems = [p for r in runs for p in r.result()]
    assert problems == []
    oh_server.faults.clear()
    for dest in dests:
        t0 = time.time()
        recs = rerun_completes(oh_server, dest, ids, "-p", "600")
        statuses = {r["id"]: r["status"] for r in recs}
        assert set(statuses) == set(ids)
        for fid in [i for i in ids[:4] if statuses[i] == "resumed"]:
            gets = [e for e in storage_gets_of(oh_server, fid) if e.start >= t0]
            assert gets and gets[0].headers.get("range", "").startswith("bytes=")


# -- parallel ranges ----------------------------------------------------------------------------


def test_a_signal_during_parallel_ranges_keeps_the_done_ranges(
    oh_server: Any, tmp_path: Path
) -> None:
    size = 5 * 16 * 1024 * 1024
    fid = add_big_file(oh_server, size)
    oh_server.faults.bandwidth = 6_000_000  # per connection: the file comes as ranges
    proc = start_mirror(oh_server, tmp_path, "-p", "600", "-j", "2", "--multi-thread-cutoff", "1M")
    sidecar = tmp_path / ".ohpub/partial" / f"{fid}.json"

    def meta() -> dict[str, Any]:
        try:
            return dict(json.loads(sidecar.read_text()))
        except (OSError, ValueError):
            return {}

    wait_until(lambda: len(meta().get("done", [])) >= 1, timeout=90)
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc)
    assert_interrupted(code, err, signal.SIGINT)
    kept, chunk = meta()["done"], meta()["chunk"]  # the blocks the sidecar counts in
    assert kept and len(kept) < -(-size // chunk)
    assert tree(tmp_path) == {}
    oh_server.faults.clear()
    t0 = time.time()
    recs = rerun_completes(oh_server, tmp_path, [fid], "-p", "600", "--multi-thread-cutoff", "1M")
    assert [r["status"] for r in recs] == ["resumed"]
    for get in [e for e in storage_gets_of(oh_server, fid) if e.start >= t0]:
        first = int(get.headers["range"].split("=")[1].split("-")[0])
        assert first // chunk not in kept  # a done range is never fetched again


# -- the commit ---------------------------------------------------------------------------------


def test_a_signal_during_the_commit_leaves_every_placed_file_recorded(
    oh_server: Any, tmp_path: Path
) -> None:
    """SIGINT as the first files reach their final paths: the batch being placed is
    finished and recorded (a signal never cuts it between the renames and the state
    transaction), so ``verify`` finds every placed file tracked and intact."""
    ids = oh_server.generate(300, 10, 200, 900, project_id=300, seed=7)
    proc = start_mirror(oh_server, tmp_path, "-p", "300")
    wait_until(lambda: tmp_path.is_dir() and any(p.is_dir() for p in tmp_path.glob("*/300")))
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc)
    if code == 0:
        pytest.skip("the run finished before the signal arrived")
    assert_interrupted(code, err, signal.SIGINT)
    ver = run_cli(oh_server, ["verify", str(tmp_path), "-f", "jsonl"])
    recs = jsonl(ver.stdout)
    assert ver.code == 0 and {r["status"] for r in recs} <= {"ok"}, ver.stdout
    assert len(recs) == len(tree(tmp_path))  # nothing placed that the state does not know
    rerun_completes(oh_server, tmp_path, ids, "-p", "300")


# -- the first moments --------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_while_python_imports_ends_as_quietly_as_any_other(
    oh_server: Any, tmp_path: Path, sig: int
) -> None:
    """0.3.0 printed a KeyboardInterrupt traceback for a Ctrl-C in its first 0.4 s."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to see when the handlers are installed")
    rng = random.Random(sig)
    for _ in range(5):
        env = {**os.environ, "OHPUB_BASE_URL": oh_server.base_url, "NO_COLOR": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "ohpub", "mirror", str(tmp_path), "-p", "102"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        wait_until(lambda p=proc: handlers_installed(p.pid) or p.poll() is not None)
        time.sleep(rng.uniform(0, 0.05))  # the command line's modules are being imported
        proc.send_signal(sig)
        code, err = finish(proc)
        assert code in (EXIT[sig], 0), err
        if code:
            assert err.strip() == "ohpub: interrupted", err


# -- shielded sections, in process ------------------------------------------------------------


def test_ctrl_c_inside_a_state_transaction_is_raised_after_it_commits(tmp_path: Path) -> None:
    """The CLI's handler does not cut a state transaction: the interrupt is raised once it
    has committed, and the connection is not left inside a transaction (which made the
    run's last write, the record of how it ended, fail)."""
    from ohpub.cli import interrupts
    from ohpub.local.state import StateDB
    from tests.test_state import make_fs

    with StateDB.open(tmp_path) as db, interrupts.installed() as token:
        with pytest.raises(KeyboardInterrupt), db._write("test") as conn:
            conn.execute("DELETE FROM files")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler ran here; the transaction goes on
            done = True
        assert done and token.cancelled
        db.put(make_fs(1))  # a new transaction starts
        assert [fs.id for fs in db.all()] == [1]


def test_a_command_after_an_interrupted_one_in_the_same_process_exits_0(
    oh_server: Any, tmp_path: Path
) -> None:
    """The app run in-process again (a notebook, a test) after a Ctrl-C: the next command
    is judged on its own, not on the signal of the one before (it exited 130 before)."""
    from ohpub.cli import interrupts

    with pytest.raises(KeyboardInterrupt), interrupts.installed() as token:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert token.cancelled
    res = run_cli(oh_server, ["list", "--project", "102"])
    assert res.code == 0, res.stderr
