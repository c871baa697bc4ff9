"""How long ``ohpub mirror`` takes to exit after SIGINT (or SIGTERM), phase by phase.

    python scripts/interrupt_latency.py [--runs N] [--code DIR] [--phase NAME ...]

Each run starts ``python -m ohpub mirror`` against the local test server
(``tests/ohserver.py``), waits until the run is in the phase (seen from the server or from
DEST), sends the signal and measures the time until the process has exited, and its exit
code. ``--code DIR`` runs another checkout's ohpub (say the previous release, for a side
by side). The tests (tests/test_interrupts.py) assert behaviour; this measures time.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import add_big_file, handlers_installed  # noqa: E402
from tests.ohserver import OHServer  # noqa: E402


def wait_until(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the phase never came")
        time.sleep(0.002)


def setup_listing(s: OHServer) -> list[str]:
    s.generate(6, 2, 2000, 5000, project_id=300, seed=3)
    s.faults.latency["api"] = 3.0
    return ["-p", "300"]


def setup_listing_backoff(s: OHServer) -> list[str]:
    s.generate(6, 2, 2000, 5000, project_id=300, seed=3)
    s.faults.script(role="api", path_regex="datafiles", statuses=[503] * 5, retry_after=20)
    return ["-p", "300"]


def setup_storage_backoff(s: OHServer) -> list[str]:
    s.load_sample()
    add_big_file(s, 300_000)
    s.faults.script(role="storage", statuses=[503] * 3, retry_after=20)
    return ["-p", "600"]


def setup_transfer(s: OHServer) -> list[str]:
    s.load_sample()
    for i in range(4):
        add_big_file(s, 3_000_000, seed=i, basename=f"big{i}.bin")
    s.faults.bandwidth = 400_000
    return ["-p", "600", "-j", "3"]


def setup_ranges(s: OHServer) -> list[str]:
    s.load_sample()
    add_big_file(s, 5 * 16 * 1024 * 1024)
    s.faults.bandwidth = 6_000_000
    return ["-p", "600", "-j", "2", "--multi-thread-cutoff", "1M"]


def setup_commit(s: OHServer) -> list[str]:
    s.generate(300, 10, 200, 900, project_id=300, seed=7)
    return ["-p", "300"]


def setup_imports(s: OHServer) -> list[str]:
    s.load_sample()
    return ["-p", "102"]


def _in_phase(name: str, s: OHServer, dest: Path, proc: subprocess.Popen[bytes]) -> None:
    log = s.log
    if name == "listing":
        wait_until(lambda: s.in_flight["api"] > 0)
    elif name == "listing_backoff":
        wait_until(lambda: any(e.role == "api" and e.status == 503 for e in list(log)))
        time.sleep(0.2)
    elif name == "storage_backoff":
        wait_until(lambda: any(e.role == "storage" and e.status == 503 for e in list(log)))
        time.sleep(0.2)
    elif name in ("transfer", "transfer_sigterm"):
        wait_until(lambda: s.in_flight["storage"] > 0)
        time.sleep(0.3)
    elif name == "ranges":
        wait_until(lambda: s.in_flight["storage"] >= 2)
        time.sleep(0.5)
    elif name == "commit":
        wait_until(lambda: dest.is_dir() and any(p.is_dir() for p in dest.glob("*/300")))
    elif name == "imports":
        wait_until(lambda: handlers_installed(proc.pid) or proc.poll() is not None)


PHASES: dict[str, Callable[[OHServer], list[str]]] = {
    "imports": setup_imports,
    "listing": setup_listing,
    "listing_backoff": setup_listing_backoff,
    "storage_backoff": setup_storage_backoff,
    "transfer": setup_transfer,
    "transfer_sigterm": setup_transfer,
    "ranges": setup_ranges,
    "commit": setup_commit,
}


def one(name: str, code_dir: Path) -> tuple[float, int, int]:
    """(seconds from the signal to the exit, exit code, requests the server saw after it)."""
    with OHServer() as s, tempfile.TemporaryDirectory() as tmp:
        args = PHASES[name](s)
        dest = Path(tmp) / "m"
        env = {
            **os.environ,
            "OHPUB_BASE_URL": s.base_url,
            "NO_COLOR": "1",
            "PYTHONPATH": str(code_dir),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "ohpub", "mirror", str(dest), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=code_dir,
        )
        _in_phase(name, s, dest, proc)
        sig = signal.SIGTERM if name.endswith("sigterm") else signal.SIGINT
        t0 = time.monotonic()
        wall = time.time()
        proc.send_signal(sig)
        proc.wait(timeout=300)
        took = time.monotonic() - t0
        assert proc.stderr is not None
        proc.stderr.read()
        later = sum(1 for e in list(s.log) if e.start >= wall)
        return took, proc.returncode, later


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--code", type=Path, default=REPO, help="the checkout whose ohpub runs")
    ap.add_argument("--phase", action="append", choices=sorted(PHASES))
    opts = ap.parse_args(argv)
    print(f"ohpub from {opts.code}; {opts.runs} runs per phase; load {os.getloadavg()[0]:.1f}")
    print(f"{'phase':<17} {'median s':>9} {'max s':>7}  exit codes   requests after")
    for name in opts.phase or list(PHASES):
        results: list[Any] = [one(name, opts.code) for _ in range(opts.runs)]
        took = [r[0] for r in results]
        codes = sorted({r[1] for r in results})
        later = sorted({r[2] for r in results})
        print(
            f"{name:<17} {statistics.median(took):9.3f} {max(took):7.3f}  "
            f"{','.join(map(str, codes)):<12} {','.join(map(str, later))}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
