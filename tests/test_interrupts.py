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

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    FAST_RETRY,
    REPO,
    add_big_file,
    content_of,
    jsonl,
    run_cli,
    start_mirror,
    storage_gets_of,
    tree,
)
from tests.test_crash import FinalPathWatcher, assert_consistent, partials, wait_until

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


# -- an error while placing -----------------------------------------------------------------------


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
