"""Issue 13: the byte path and big files, side by side in one run.

    python -m benchmarks.run transfer [--size 400MiB] [--capped-size 1GB] [--cap 25MB] ...

(a) **one big file, no cap**, over HTTP and over HTTPS (the local server with a CA made at
    start): ``ohpub fetch`` and ``ohpub mirror`` against ``curl -L -o FILE`` on the same
    protocol, and the MD5 throughput of this machine. Figure: ohpub's rate divided by
    min(curl, md5) on that protocol (target >= 0.8).
(b) **one 1 GB file at 25 MB/s per storage connection** (``faults.bandwidth`` paces every
    storage response): ``ohpub mirror -j J`` (and ``ohpub fetch`` with ``-j`` when it has
    one) against its floor size / (J x cap), ``aria2c -x J -s J`` and single-connection
    curl. Targets: ohpub <= 1.2x floor and faster than aria2c.
(c) **peak RSS** of every run (``/usr/bin/time`` max RSS and the sampled process tree;
    target < 100 MB for ohpub).

Every run is a child process (``benchlib.run_measured``) writing to disk in a fresh
directory; the bytes it leaves are checked (size and MD5) against the server's. Before each
timed run the machine gets up to ``--settle`` seconds to go quiet (other test runs share it);
"other load" shows the cores used by other processes during the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
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
        """Run ``build(dest)`` -> (command, file it must leave), check the bytes, record."""
        dest = bl.fresh_dir(self.work / "dest")
        cmd, out = build(dest)
        server.reset()
        if self.args.settle:
            bl.wait_quiet(self.args.settle)
        self.log(f"    {row.name}: {' '.join(cmd)[:160]}")
        proc = bl.run_measured(cmd, env=server.client_env(self.env), cwd=self.work, timeout=timeout)
        st = server.stats()
        f = server.oh.file(fid)
        ok = out.is_file() and out.stat().st_size == f.size and _md5(out) == f.content.md5_hex()
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

    def ohpub_fetch(self, server: bl.BenchServer, fid: int, jobs: int | None) -> Any:
        def build(dest: Path) -> tuple[list[str], Path]:
            cmd = [*pr._ohpub_exe(), "--base-url", server.base_url, "--quiet", "fetch", str(fid)]
            if jobs and self.fetch_has_jobs:
                cmd += ["--jobs", str(jobs)]
            return [*cmd, "-d", str(dest)], dest / server.oh.file(fid).basename

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
        size = self.args.size
        self.log(f"(a) {proto}: one {size / MIB:.0f} MiB file, no cap")
        server = bl.BenchServer(self.args.big_latency, None, tls=proto == "https")
        try:
            fid = server.generate(1, 1, size, size)[0]
            timeout = self.args.timeout
            rows = [
                Row("ohpub fetch", "ohpub fetch ID -d DIR"),
                Row("ohpub mirror", f"ohpub mirror DEST -p 300 -j {self.args.jobs}"),
                Row("curl", "curl -L -o FILE DOWNLOAD_URL" + _ca_flag(proto, "--cacert")),
            ]
            builds = [
                self.ohpub_fetch(server, fid, None),
                self.ohpub_mirror(server, fid, self.args.jobs),
                self.curl(server, fid),
            ]
            self._need(rows[2], "curl")
            self.repeat(
                [
                    (r, lambda r=r, b=b: self.measure(r, server, fid, b, timeout))
                    for r, b in zip(rows, builds, strict=True)
                ]
            )
            self._server_errors(server, f"(a) {proto}")
            return {"proto": proto, "size": size, "md5_rate": md5_rate, "rows": rows}
        finally:
            server.stop()

    # -- (b) one capped file, parallel connections ------------------------------------------

    def capped(self, proto: str) -> dict[str, Any]:
        size, cap, jobs = self.args.capped_size, self.args.cap, self.args.jobs
        self.log(f"(b) {proto}: one {size / MB:.0f} MB file at {cap / MB:.0f} MB/s/connection")
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

    def _need(self, row: Row, tool: str) -> None:
        if shutil.which(tool) is None:
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


def render_big(results: list[dict[str, Any]]) -> str:
    """Rates from the storage GET's start to the process's exit (the byte path, the final
    fsync and the bookkeeping; not the interpreter start and the listing), and end to end."""
    out = [
        "| protocol | peer | MiB/s GET->exit (median) | runs | MiB/s end to end | wall s "
        "| peak RSS MB | other load | ohpub / min(curl, md5) | same, end to end | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    targets = []
    for res in results:
        size, md5 = res["size"], res["md5_rate"]
        curl = next(r for r in res["rows"] if r.name == "curl")
        ceiling = md5
        ceiling_wall = md5
        if curl.runs:
            ceiling = min(size / curl.xfer, md5)
            ceiling_wall = min(size / curl.wall, md5)
        for row in res["rows"]:
            if row.unavailable or not row.runs:
                why = row.unavailable or "no run"
                out.append(f"| {res['proto']} | {row.name} | {why} | | | | | | | | |")
                continue
            rate, wall_rate = size / row.xfer, size / row.wall
            ratio = ratio_wall = ""
            if row.name.startswith("ohpub"):
                ratio = f"**{rate / ceiling:.2f}**"
                ratio_wall = f"{wall_rate / ceiling_wall:.2f}"
                mark = "MET" if rate >= 0.8 * ceiling else "MISSED"
                targets.append(
                    f"- target (a) {res['proto']} {row.name} >= 0.8x min(curl, md5): "
                    f"**{mark}** ({rate / MIB:.0f} / {ceiling / MIB:.0f} MiB/s = "
                    f"{rate / ceiling:.2f}x; end to end {wall_rate / ceiling_wall:.2f}x)"
                )
                targets.append(_rss_target(f"(a) {res['proto']} {row.name}", row))
            out.append(
                f"| {res['proto']} | {row.name} | {_rate(size, row.xfer)} | "
                f"{_runs_cell(row, size)} | {_rate(size, row.wall)} | {row.wall:.2f} | "
                f"{row.rss / MB:.0f} | {bl.median([r.other for r in row.runs]):.2f} | "
                f"{ratio} | {ratio_wall} | {_notes(row)} |"
            )
        out.append(
            f"| {res['proto']} | md5 (hashlib, 1 thread) | {md5 / MIB:.0f} | | | | | | | | |"
        )
    return "\n".join(out + [""] + targets) + "\n"


def _rss_target(name: str, row: Row) -> str:
    rss = row.rss / MB
    return (
        f"- target {name} peak RSS < 100 MB: **{'MET' if rss < 100 else 'MISSED'}** ({rss:.0f} MB)"
    )


def render_capped(results: list[dict[str, Any]]) -> str:
    out = [
        "| protocol | peer | wall s (median) | runs s | x floor | x aria2c | MB/s | "
        "storage GETs | storage in flight | peak RSS MB | other load | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    targets = []
    for res in results:
        size, floor = res["size"], res["floor"]
        aria = next(r for r in res["rows"] if r.name == "aria2c")
        aria_wall = aria.wall if aria.runs else math.nan
        for row in res["rows"]:
            if row.unavailable or not row.runs:
                why = row.unavailable or "no run"
                out.append(f"| {res['proto']} | {row.name} | {why} | | | | | | | | | |")
                continue
            t = sorted(row.runs, key=lambda r: r.wall)[(len(row.runs) - 1) // 2]
            out.append(
                f"| {res['proto']} | {row.name} | {row.wall:.2f} | "
                f"{', '.join(f'{r.wall:.1f}' for r in row.runs)} | {row.wall / floor:.2f} | "
                f"{row.wall / aria_wall:.2f} | {size / row.wall / MB:.0f} | {t.storage_gets} | "
                f"{max(r.peak_storage for r in row.runs)} | {row.rss / MB:.0f} | "
                f"{bl.median([r.other for r in row.runs]):.2f} | {_notes(row)} |"
            )
            if row.name.startswith("ohpub"):
                ratio = row.wall / floor
                targets.append(
                    f"- target (b) {res['proto']} {row.name} <= 1.2x floor: "
                    f"**{'MET' if ratio <= 1.2 else 'MISSED'}** ({row.wall:.2f} s / "
                    f"{floor:.2f} s = {ratio:.2f}x)"
                )
                if not math.isnan(aria_wall):
                    targets.append(
                        f"- target (b) {res['proto']} {row.name} faster than aria2c: "
                        f"**{'MET' if row.wall < aria_wall else 'MISSED'}** "
                        f"({row.wall:.2f} s vs {aria_wall:.2f} s)"
                    )
                targets.append(_rss_target(f"(b) {res['proto']} {row.name}", row))
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
    p.add_argument("--capped-size", type=parse_size, help="(b) file size (default 1GB)")
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
    args.capped_size = args.capped_size or (2 * MB if q else 1000 * MB)
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
    print(f"- runs per peer {args.runs} (median), peer budget {args.peer_budget:.0f} s\n")
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
            capped = [bench.capped(proto) for proto in args.protos]
            print(
                f"## (b) One {args.capped_size / MB:.0f} MB file at {args.cap / MB:.0f} MB/s "
                f"per storage connection, {args.jobs} connections, latency "
                f"{args.latency * 1000:.0f} ms; floor = size / ({args.jobs} x cap) = "
                f"{args.capped_size / (args.jobs * args.cap):.2f} s\n"
            )
            print(render_capped(capped), flush=True)
            out["capped"] = capped
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    print(f"total benchmark time {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(out, default=lambda o: o.as_dict() if isinstance(o, Row) else str, indent=1)
        )
    for problem in bench.problems:
        print(f"benchmark problem: {problem}", file=sys.stderr)
    return 1 if bench.problems else 0
