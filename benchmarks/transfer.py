"""Issues 13 and 20: the byte path and big files, side by side in one run.

    python -m benchmarks.run transfer [--size 400MiB] [--capped-sizes 256MiB,1GB] [--cap 25MB]

(a) **one big file, no cap, at the defaults** (ranges on their own decision), over HTTP and
    over HTTPS (the local server with a CA made at start): ``ohpub fetch`` and ``ohpub
    mirror`` against ``curl -L -o FILE`` and ``aria2c -x J -s J`` on the same protocol, the
    same ``ohpub fetch`` with ranges off (``--multi-thread-cutoff 1P``: one stream), the MD5
    throughput of this machine and its disk (``dd ... conv=fdatasync``: ohpub fsyncs every
    file before it is placed, curl and aria2c do not). Figures: ohpub's rate divided by
    min(curl, md5) on that protocol (targets >= 0.8 over HTTP, >= 0.6 over HTTPS), by
    min(curl, md5, disk), and by the same build with ranges off (target >= 0.95).
(b) **one file at 25 MB/s per storage connection** (``faults.bandwidth`` paces every storage
    response), by default 256 MiB and 1 GB: ``ohpub mirror -j J`` and ``ohpub fetch``
    against the floor size / (J x cap), ``aria2c -x J -s J`` and single-connection curl.
    Targets: <= 1.3x the floor at 256 MiB, <= 1.15x at 1 GB, and no slower than aria2c.
(c) **peak RSS** of every run (``/usr/bin/time`` max RSS and the sampled process tree;
    target < 100 MB for ohpub).

Every run is a child process (``benchlib.run_measured``) writing to disk in a fresh
directory; the bytes it leaves are checked (size and MD5) against the server's. Peers are
run in rounds, interleaved, and the median is shown. Before each timed run the machine gets
up to ``--settle`` seconds to go quiet (other test runs share it); "other load" shows the
cores used by other processes during the run, "load" the 1-minute load average (``uptime``)
when it started.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib as bl
import peers as pr

MIB = 1 << 20
MB = 1000 * 1000
ONE_STREAM = "ohpub fetch, ranges off"
"""The same build with parallel ranges switched off: the defaults must not be slower."""
TARGET_A = {"http": 0.8, "https": 0.6}
"""(a): ohpub >= this x min(curl, md5) on the protocol."""


def parse_size(text: str) -> int:
    """``400MiB``, ``1GB``, ``25MB``, ``8M`` (= MiB) or bytes."""
    t = text.strip().upper().replace(" ", "")
    units = {"GIB": 1 << 30, "MIB": MIB, "KIB": 1024, "GB": 10**9, "MB": MB, "KB": 1000}
    units.update({"G": 1 << 30, "M": MIB, "K": 1024, "B": 1})
    for suffix, factor in units.items():
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * factor)
    return int(t)


@dataclass
class Run:
    wall: float
    rss: int
    rc: int | None
    ok: bool  # the bytes on disk are the file's
    other: float  # cores used by other processes meanwhile
    storage_gets: int
    peak_storage: int
    xfer: float  # seconds from the first storage GET's start to the process's exit
    note: str = ""
    load: float = 0.0  # 1-minute load average when the run started


@dataclass
class Row:
    name: str
    command: str
    runs: list[Run] = field(default_factory=list)
    unavailable: str = ""

    @property
    def wall(self) -> float:
        return bl.median([r.wall for r in self.runs])

    @property
    def xfer(self) -> float:
        return bl.median([r.xfer for r in self.runs])

    @property
    def rss(self) -> int:
        return max((r.rss for r in self.runs), default=0)

    @property
    def load(self) -> float:
        return bl.median([r.load for r in self.runs])

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "command": self.command,
            "unavailable": self.unavailable,
            "runs": [r.__dict__ for r in self.runs],
        }


class TransferBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        pr.WORK.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="transfer-", dir=pr.WORK))
        self.env = pr.env_for_children()
        self.problems: list[str] = []
        self.fetch_has_jobs = (
            "--jobs"
            in subprocess.run(
                [*pr._ohpub_exe(), "fetch", "--help"], capture_output=True, text=True, check=False
            ).stdout
        )

    def log(self, msg: str) -> None:
        if not self.args.quiet:
            print(msg, file=sys.stderr, flush=True)

    # -- one measured run ---------------------------------------------------------------

    def measure(
        self,
        row: Row,
        server: bl.BenchServer,
        fid: int,
        build: Callable[[Path], tuple[list[str], Path]],
        timeout: float,
    ) -> None:
        """Run ``build(dest)`` -> (command, file it must leave), check the bytes, record
        (a row named ``disk`` writes zeros: its file is checked for its size only)."""
        dest = bl.fresh_dir(self.work / "dest")
        cmd, out = build(dest)
        server.reset()
        if self.args.settle:
            bl.wait_quiet(self.args.settle)
        self.log(f"    {row.name}: {' '.join(cmd)[:160]}")
        load = os.getloadavg()[0]
        proc = bl.run_measured(cmd, env=server.client_env(self.env), cwd=self.work, timeout=timeout)
        st = server.stats()
        f = server.oh.file(fid)
        ok = out.is_file() and out.stat().st_size == f.size
        ok = ok and (row.name == "disk" or _md5(out) == f.content.md5_hex())
        note = ""
        if proc.timed_out:
            note = f"killed at the {timeout:.0f} s timeout"
        elif proc.rc != 0:
            note = f"exit {proc.rc}: {proc.stderr.strip()[-200:]}"
        elif not ok:
            note = "bytes on disk differ from the server's"
        if note and row.name.startswith("ohpub"):
            self.problems.append(f"{row.name}: {note}")
        row.runs.append(
            Run(
                wall=proc.wall,
                rss=proc.peak_rss,
                rc=proc.rc,
                ok=ok,
                other=proc.other_cpu / proc.wall if proc.wall else 0.0,
                storage_gets=st.storage_requests,
                peak_storage=st.peak_roles.get("storage", 0),
                xfer=proc.ended - (st.first_storage_start or proc.started),
                note=note,
                load=load,
            )
        )
        shutil.rmtree(dest, ignore_errors=True)

    def repeat(self, rows: list[tuple[Row, Callable[[], None]]]) -> None:
        """``--runs`` rounds, interleaved; a peer whose runs took more than ``--peer-budget``
        seconds in all is not repeated."""
        for i in range(self.args.runs):
            for row, once in rows:
                if row.unavailable or sum(r.wall for r in row.runs) > self.args.peer_budget:
                    continue
                self.log(f"  run {i + 1}: {row.name}")
                once()

    # -- peers --------------------------------------------------------------------------

    def ohpub_fetch(
        self, server: bl.BenchServer, fid: int, jobs: int | None, *extra: str
    ) -> Any:
        def build(dest: Path) -> tuple[list[str], Path]:
            cmd = [*pr._ohpub_exe(), "--base-url", server.base_url, "--quiet", "fetch", str(fid)]
            if jobs and self.fetch_has_jobs:
                cmd += ["--jobs", str(jobs)]
            return [*cmd, *extra, "-d", str(dest)], dest / server.oh.file(fid).basename

        return build

    def disk(self, size: int) -> Any:
        """The disk's rate for a durable write of ``size`` bytes (ohpub fsyncs each file)."""

        def build(dest: Path) -> tuple[list[str], Path]:
            out = dest / "big.bin"
            count = -(-size // MIB)
            cmd = ["dd", "if=/dev/zero", f"of={out}", "bs=1M", f"count={count}", "conv=fdatasync"]
            return [*cmd, "status=none"], out

        return build

    def ohpub_mirror(self, server: bl.BenchServer, fid: int, jobs: int) -> Any:
        def build(dest: Path) -> tuple[list[str], Path]:
            f = server.oh.file(fid)
            cmd = [
                *pr._ohpub_exe(),
                "--base-url",
                server.base_url,
                "--quiet",
                "mirror",
                str(dest),
                "--project",
                str(bl.PROJECT),
                "--jobs",
                str(jobs),
            ]
            return cmd, dest / f.username / str(bl.PROJECT) / f.basename

        return build

    def curl(self, server: bl.BenchServer, fid: int) -> Any:
        def build(dest: Path) -> tuple[list[str], Path]:
            out = dest / "big.bin"
            cmd = ["curl", "-sS", "--no-progress-meter", "-L", "-o", str(out)]
            if server.ca_bundle:
                cmd += ["--cacert", server.ca_bundle]
            return [*cmd, server.oh.download_url(fid)], out

        return build

    def aria2c(self, server: bl.BenchServer, fid: int, jobs: int) -> Any:
        def build(dest: Path) -> tuple[list[str], Path]:
            cmd = [
                "aria2c",
                "-q",
                "-x",
                str(jobs),
                "-s",
                str(jobs),
                "-k",
                "1M",
                "--file-allocation=none",
                "--auto-file-renaming=false",
                "--console-log-level=error",
                "--summary-interval=0",
                "-d",
                str(dest),
                "-o",
                "big.bin",
            ]
            if server.ca_bundle:
                cmd += ["--ca-certificate", server.ca_bundle]
            return [*cmd, server.oh.download_url(fid)], dest / "big.bin"

        return build

    # -- (a) one big file, no cap ---------------------------------------------------------

    def big(self, proto: str, md5_rate: float) -> dict[str, Any]:
        size, jobs = self.args.size, self.args.jobs
        self.log(f"(a) {proto}: one {size / MIB:.0f} MiB file, no cap")
        server = bl.BenchServer(self.args.big_latency, None, tls=proto == "https")
        try:
            fid = server.generate(1, 1, size, size)[0]
            timeout = self.args.timeout
            peers = [
                (Row("ohpub fetch", "ohpub fetch ID -d DIR"), self.ohpub_fetch(server, fid, None)),
                (
                    Row("ohpub mirror", f"ohpub mirror DEST -p 300 -j {jobs}"),
                    self.ohpub_mirror(server, fid, jobs),
                ),
                (
                    Row(ONE_STREAM, "ohpub fetch ID -d DIR --multi-thread-cutoff 1P"),
                    self.ohpub_fetch(server, fid, None, "--multi-thread-cutoff", "1P"),
                ),
                (
                    Row("curl", "curl -L -o FILE DOWNLOAD_URL" + _ca_flag(proto, "--cacert")),
                    self.curl(server, fid),
                ),
                (
                    Row(
                        "aria2c",
                        f"aria2c -x {jobs} -s {jobs} -k 1M DOWNLOAD_URL"
                        + _ca_flag(proto, "--ca-certificate"),
                    ),
                    self.aria2c(server, fid, jobs),
                ),
                (Row("disk", "dd if=/dev/zero of=FILE bs=1M conv=fdatasync"), self.disk(size)),
            ]
            for row, _ in peers:
                self._need(row, {"curl": "curl", "aria2c": "aria2c", "disk": "dd"}.get(row.name))
            self.repeat(
                [
                    (r, lambda r=r, b=b: self.measure(r, server, fid, b, timeout))
                    for r, b in peers
                ]
            )
            self._server_errors(server, f"(a) {proto}")
            rows = [r for r, _ in peers]
            return {"proto": proto, "size": size, "md5_rate": md5_rate, "rows": rows}
        finally:
            server.stop()

    # -- (b) one capped file, parallel connections ------------------------------------------

    def capped(self, proto: str, size: int) -> dict[str, Any]:
        cap, jobs = self.args.cap, self.args.jobs
        self.log(f"(b) {proto}: one {size / MB:.0f} MB file at {cap / MB:.0f} MB/s/connection")
        # a peer slower than the budget (single-connection curl) runs once
        server = bl.BenchServer(self.args.latency, cap, tls=proto == "https")
        try:
            fid = server.generate(1, 1, size, size)[0]
            timeout = size / cap + 60
            fetch_cmd = "ohpub fetch ID -d DIR" + (f" -j {jobs}" if self.fetch_has_jobs else "")
            rows = [
                Row("ohpub mirror", f"ohpub mirror DEST -p 300 -j {jobs}"),
                Row("ohpub fetch", fetch_cmd),
                Row(
                    "aria2c",
                    f"aria2c -x {jobs} -s {jobs} -k 1M DOWNLOAD_URL"
                    + _ca_flag(proto, "--ca-certificate"),
                ),
                Row("curl", "curl -L -o FILE DOWNLOAD_URL (one connection)"),
            ]
            builds = [
                self.ohpub_mirror(server, fid, jobs),
                self.ohpub_fetch(server, fid, jobs),
                self.aria2c(server, fid, jobs),
                self.curl(server, fid),
            ]
            self._need(rows[2], "aria2c")
            self._need(rows[3], "curl")
            self.repeat(
                [
                    (r, lambda r=r, b=b: self.measure(r, server, fid, b, timeout))
                    for r, b in zip(rows, builds, strict=True)
                ]
            )
            self._server_errors(server, f"(b) {proto}")
            floor = size / (jobs * cap)
            return {"proto": proto, "size": size, "cap": cap, "floor": floor, "rows": rows}
        finally:
            server.stop()

    def _need(self, row: Row, tool: str | None) -> None:
        if tool is not None and shutil.which(tool) is None:
            row.unavailable = f"{tool} not found (benchmarks/setup.sh)"

    def _server_errors(self, server: bl.BenchServer, where: str) -> None:
        for e in server.oh.errors[:3]:
            self.problems.append(f"{where}: server error: {e.strip()[-300:]}")


def _ca_flag(proto: str, flag: str) -> str:
    return f" {flag} CA" if proto == "https" else ""


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def md5_throughput(nbytes: int = 256 * MIB) -> float:
    """Bytes/s of hashlib.md5 on this machine, one thread, 1 MiB updates (best of 3)."""
    from tests.ohserver import SyntheticContent

    chunks = list(SyntheticContent(nbytes, seed=7).iter_range(0, nbytes, MIB))
    best = 0.0
    for _ in range(3):
        h = hashlib.md5()
        t0 = time.perf_counter()
        for c in chunks:
            h.update(c)
        best = max(best, nbytes / (time.perf_counter() - t0))
    return best


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _rate(size: int, wall: float) -> str:
    return f"{size / wall / MIB:.0f}" if wall and not math.isnan(wall) else "-"


def _runs_cell(row: Row, size: int) -> str:
    return ", ".join(_rate(size, r.xfer) for r in row.runs)


def _notes(row: Row) -> str:
    notes = sorted({r.note for r in row.runs if r.note})
    bad = sum(1 for r in row.runs if not r.ok)
    if bad and not notes:
        notes.append(f"{bad} run(s) left wrong bytes")
    return "; ".join(notes)


def _rate_of(row: Row | None, size: int) -> float:
    return size / row.xfer if row is not None and row.runs else math.nan


def render_big(results: list[dict[str, Any]]) -> str:
    """Rates from the storage GET's start to the process's exit (the byte path, the final
    fsync and the bookkeeping; not the interpreter start and the listing), and end to end;
    each ohpub row as a ratio to peers of the same run."""
    out = [
        "| protocol | peer | MiB/s GET->exit (median) | runs | MiB/s end to end | wall s "
        "| storage GETs | peak RSS MB | other load | load | / min(curl, md5) "
        "| / min(curl, md5, disk) | / ranges off | / aria2c | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    targets = []
    for res in results:
        size, md5, proto = res["size"], res["md5_rate"], res["proto"]
        by = {r.name: r for r in res["rows"]}
        curl, aria, disk, single = (
            _rate_of(by.get(n), size) for n in ("curl", "aria2c", "disk", ONE_STREAM)
        )
        ceiling = min(x for x in (curl, md5) if not math.isnan(x))
        durable = min(x for x in (curl, md5, disk) if not math.isnan(x))
        for row in res["rows"]:
            if row.unavailable or not row.runs:
                why = row.unavailable or "no run"
                out.append(f"| {proto} | {row.name} | {why} |" + " |" * 12)
                continue
            rate = size / row.xfer
            cells = ["", "", "", ""]
            if row.name.startswith("ohpub"):
                cells = [
                    f"**{rate / ceiling:.2f}**",
                    f"{rate / durable:.2f}",
                    f"{rate / single:.2f}" if row.name != ONE_STREAM else "",
                    f"{rate / aria:.2f}" if not math.isnan(aria) else "",
                ]
                targets += _big_targets(proto, row, rate, ceiling, durable, single)
            out.append(
                f"| {proto} | {row.name} | {_rate(size, row.xfer)} | "
                f"{_runs_cell(row, size)} | {_rate(size, row.wall)} | {row.wall:.2f} | "
                f"{', '.join(str(r.storage_gets) for r in row.runs)} | "
                f"{row.rss / MB:.0f} | {bl.median([r.other for r in row.runs]):.2f} | "
                f"{row.load:.1f} | {' | '.join(cells)} | {_notes(row)} |"
            )
        out.append(f"| {proto} | md5 (hashlib, 1 thread) | {md5 / MIB:.0f} |" + " |" * 12)
    return "\n".join(out + [""] + targets) + "\n"


def _big_targets(
    proto: str, row: Row, rate: float, ceiling: float, durable: float, single: float
) -> list[str]:
    want = TARGET_A[proto]
    mark = "MET" if rate >= want * ceiling else "MISSED"
    lines = [
        f"- target (a) {proto} {row.name} >= {want}x min(curl, md5): **{mark}** "
        f"({rate / MIB:.0f} / {ceiling / MIB:.0f} MiB/s = {rate / ceiling:.2f}x; "
        f"{rate / durable:.2f}x of min(curl, md5, disk) = {durable / MIB:.0f} MiB/s)"
    ]
    if row.name != ONE_STREAM and not math.isnan(single):
        mark = "MET" if rate >= 0.95 * single else "MISSED"
        lines.append(
            f"- target (a) {proto} {row.name} >= 0.95x the same build with ranges off: "
            f"**{mark}** ({rate / MIB:.0f} / {single / MIB:.0f} MiB/s = {rate / single:.2f}x)"
        )
    lines.append(_rss_target(f"(a) {proto} {row.name}", row))
    return lines


def _rss_target(name: str, row: Row) -> str:
    rss = row.rss / MB
    return (
        f"- target {name} peak RSS < 100 MB: **{'MET' if rss < 100 else 'MISSED'}** ({rss:.0f} MB)"
    )


def capped_target(size: int) -> float:
    """<= 1.3x the floor for a file of a few hundred MB, <= 1.15x from 1 GB on."""
    return 1.15 if size >= 900 * MB else 1.3


def render_capped(results: list[dict[str, Any]]) -> str:
    out = [
        "| size | protocol | peer | wall s (median) | runs s | x floor | x aria2c | MB/s | "
        "storage GETs | storage in flight | peak RSS MB | other load | load | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    targets = []
    for res in results:
        size, floor, proto = res["size"], res["floor"], res["proto"]
        label = f"{size / MIB:.0f} MiB" if size % MIB == 0 else f"{size / MB:.0f} MB"
        aria = next(r for r in res["rows"] if r.name == "aria2c")
        aria_wall = aria.wall if aria.runs else math.nan
        for row in res["rows"]:
            if row.unavailable or not row.runs:
                why = row.unavailable or "no run"
                out.append(f"| {label} | {proto} | {row.name} | {why} |" + " |" * 10)
                continue
            t = sorted(row.runs, key=lambda r: r.wall)[(len(row.runs) - 1) // 2]
            out.append(
                f"| {label} | {proto} | {row.name} | {row.wall:.2f} | "
                f"{', '.join(f'{r.wall:.1f}' for r in row.runs)} | {row.wall / floor:.2f} | "
                f"{row.wall / aria_wall:.2f} | {size / row.wall / MB:.0f} | {t.storage_gets} | "
                f"{max(r.peak_storage for r in row.runs)} | {row.rss / MB:.0f} | "
                f"{bl.median([r.other for r in row.runs]):.2f} | {row.load:.1f} | "
                f"{_notes(row)} |"
            )
            if row.name.startswith("ohpub"):
                ratio, want = row.wall / floor, capped_target(size)
                targets.append(
                    f"- target (b) {label} {proto} {row.name} <= {want}x floor: "
                    f"**{'MET' if ratio <= want else 'MISSED'}** ({row.wall:.2f} s / "
                    f"{floor:.2f} s = {ratio:.2f}x)"
                )
                if not math.isnan(aria_wall):
                    targets.append(
                        f"- target (b) {label} {proto} {row.name} no slower than aria2c: "
                        f"**{'MET' if row.wall <= aria_wall else 'MISSED'}** "
                        f"({row.wall:.2f} s vs {aria_wall:.2f} s)"
                    )
                targets.append(_rss_target(f"(b) {label} {proto} {row.name}", row))
    return "\n".join(out + [""] + targets) + "\n"


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run transfer",
        description="Issue 13: one big file over HTTP and HTTPS against curl and md5 (a), one "
        "capped file over J connections against its floor and aria2c (b), peak RSS (c).",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 run (smoke test)")
    p.add_argument("--parts", default="a,b", help="which parts: a, b or a,b (default)")
    p.add_argument("--protos", default="http,https", help="protocols (default http,https)")
    p.add_argument("--size", type=parse_size, help="(a) file size (default 400MiB)")
    p.add_argument(
        "--capped-sizes",
        type=lambda t: [parse_size(x) for x in t.split(",") if x.strip()],
        help="(b) file sizes (default 256MiB,1GB)",
    )
    p.add_argument("--cap", type=parse_size, help="(b) bytes/s per storage connection (25MB)")
    p.add_argument("--jobs", "-j", type=int, default=None, help="connections (default 8)")
    p.add_argument("--latency", type=float, default=0.030, help="(b) seconds per request")
    p.add_argument(
        "--big-latency", type=float, default=0.0, help="(a) seconds per request (default 0)"
    )
    p.add_argument("--runs", type=int, default=None, help="runs per peer (default 3)")
    p.add_argument(
        "--peer-budget", type=float, default=60.0, help="stop repeating a peer after N s"
    )
    p.add_argument("--settle", type=float, default=None, help="wait for quiet (default 10 s)")
    p.add_argument("--timeout", type=float, default=300.0, help="(a) seconds per run")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--quiet", "-q", action="store_true")
    args = p.parse_args(argv)
    q = args.quick
    args.size = args.size or (4 * MIB if q else 400 * MIB)
    args.capped_sizes = args.capped_sizes or ([2 * MB] if q else [256 * MIB, 1000 * MB])
    args.cap = args.cap or (2 * MB if q else 25 * MB)
    args.jobs = args.jobs or (4 if q else 8)
    args.runs = args.runs or (1 if q else 3)
    args.settle = args.settle if args.settle is not None else (0.0 if q else 10.0)
    args.parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    args.protos = [x.strip() for x in args.protos.split(",") if x.strip()]
    if not args.parts <= {"a", "b"} or not set(args.protos) <= {"http", "https"}:
        p.error("--parts takes a and/or b; --protos takes http and/or https")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = TransferBench(args)
    started = time.monotonic()
    print(f"# ohpub transfer benchmark ({'quick' if args.quick else 'full'})\n")
    print(f"- date: {bl.utc_now()}")
    print(f"- machine: {bl.machine()}")
    print(f"- ohpub source: {bl.source_state()}")
    print(f"- ohpub fetch has --jobs: {'yes' if bench.fetch_has_jobs else 'no'}")
    print(f"- runs per peer {args.runs} (median, interleaved); budget {args.peer_budget:.0f} s")
    print(f"- uptime at start: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    out: dict[str, Any] = {}
    try:
        if "a" in args.parts:
            md5 = md5_throughput(min(args.size, 256 * MIB))
            big = [bench.big(proto, md5) for proto in args.protos]
            print(
                f"## (a) One {args.size / MIB:.0f} MiB file, no cap, latency "
                f"{args.big_latency * 1000:.0f} ms\n"
            )
            print(render_big(big), flush=True)
            out["big"] = big
        if "b" in args.parts:
            capped = [
                bench.capped(proto, size) for size in args.capped_sizes for proto in args.protos
            ]
            print(
                f"## (b) One file at {args.cap / MB:.0f} MB/s per storage connection, "
                f"{args.jobs} connections, latency {args.latency * 1000:.0f} ms; "
                f"floor = size / ({args.jobs} x cap)\n"
            )
            print(render_capped(capped), flush=True)
            out["capped"] = capped
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    print(f"total benchmark time {time.monotonic() - started:.0f} s")
    print(f"uptime at the end: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(
            json.dumps(out, default=lambda o: o.as_dict() if isinstance(o, Row) else str, indent=1)
        )
    for problem in bench.problems:
        print(f"benchmark problem: {problem}", file=sys.stderr)
    return 1 if bench.problems else 0
