#!/usr/bin/env python3
"""ohpub side by side with ohpub-download, wget, curl and aria2c, against the physical floor.

    .venv/bin/python benchmarks/run.py [--quick] [--scenario N ...] [--runs K]
    .venv/bin/python -m benchmarks.run transfer [--help]   # issue 13: big files, HTTPS
    .venv/bin/python -m benchmarks.run scale --sizes 10000,30000   # issue 10
    .venv/bin/python -m benchmarks.run startup [--baseline main]   # issue 20: start-up
    .venv/bin/python -m benchmarks.run profile [--baseline main]   # issue 20: byte path
    .venv/bin/python -m benchmarks.run capacity                     # issue 17

Every scenario runs on one local Open Humans server (``tests/ohserver.py``) in benchmark mode:
latency on every request (default 30 ms), an optional per-connection bandwidth cap on
storage, generated files in project 300. Each tool runs as a child process; the server's
request log gives requests, bytes and the peak number of requests in flight per role.
Install the peers first with ``benchmarks/setup.sh``; a peer that is missing shows as
"not available" with the reason. See benchmarks/RESULTS.md for the formulas and results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also as python -m benchmarks.run
import benchlib as bl  # noqa: E402
import peers as pr  # noqa: E402

KB, MB = 1000, 1000 * 1000
KIB = 1024

# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    num: int
    title: str
    kind: str  # "download" | "noop" | "throughput" | "resume"
    files: int
    members: int
    min_size: int
    max_size: int
    cap: int | None  # bytes/s per storage connection


def scenarios(args: argparse.Namespace) -> dict[int, Scenario]:
    q = args.quick
    return {
        1: Scenario(
            1,
            "many small files",
            "download",
            args.s1_files or (40 if q else 2000),
            5 if q else 50,
            4 * KIB,
            64 * KIB,
            None,
        ),
        2: Scenario(
            2,
            "large files",
            "download",
            args.s2_files or (3 if q else 10),
            1,
            args.s2_size or (2 * MB if q else 100 * MB),
            args.s2_size or (2 * MB if q else 100 * MB),
            args.s2_cap or (4 * MB if q else 25 * MB),
        ),
        3: Scenario(
            3,
            "incremental no-op",
            "noop",
            args.s3_files or (200 if q else 10000),
            10 if q else 100,
            1 * KIB,
            8 * KIB,
            None,
        ),
        4: Scenario(
            4,
            "one large file, no cap",
            "throughput",
            1,
            1,
            args.s4_size or (20 * MB if q else 1000 * MB),
            args.s4_size or (20 * MB if q else 1000 * MB),
            None,
        ),
        5: Scenario(
            5,
            "resume after a kill at 50%",
            "resume",
            1,
            1,
            args.s5_size or (8 * MB if q else 500 * MB),
            args.s5_size or (8 * MB if q else 500 * MB),
            args.s5_cap or (8 * MB if q else 100 * MB),
        ),
    }


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    proc: bl.ProcResult
    stats: bl.LogStats
    files: int
    nbytes: int
    wall: float  # scenario 5: both runs together


@dataclass
class Row:
    peer: str
    parallelism: str
    floor: float = math.nan
    runs: list[RunRecord] = field(default_factory=list)
    unavailable: str | None = None
    notes: list[str] = field(default_factory=list)
    key: str = ""  # the scenario's own figure (MB/s, sent/size, ...)

    @property
    def wall(self) -> float:
        return bl.median([r.wall for r in self.runs])

    @property
    def typical(self) -> RunRecord:
        """The run whose wall time is the median (its counts are shown)."""
        return sorted(self.runs, key=lambda r: r.wall)[(len(self.runs) - 1) // 2]

    @property
    def rss(self) -> int:
        return max(r.proc.peak_rss for r in self.runs)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peer": self.peer, "parallelism": self.parallelism}
        if self.unavailable:
            out["unavailable"] = self.unavailable
            return out
        t = self.typical
        out.update(
            wall=self.wall,
            walls=[r.wall for r in self.runs],
            floor=self.floor,
            peak_rss=self.rss,
            cpu=bl.median([r.proc.cpu for r in self.runs]),
            site_requests=t.stats.site_requests,
            storage_requests=t.stats.storage_requests,
            peak_site=max(r.stats.peak_site for r in self.runs),
            peak_site_server=max(r.stats.peak_roles.get("site", 0) for r in self.runs),
            peak_storage=max(r.stats.peak_roles.get("storage", 0) for r in self.runs),
            bytes_sent=t.stats.total_bytes,
            storage_bytes=t.stats.bytes_sent.get("storage", 0),
            files=t.files,
            file_bytes=t.nbytes,
            rc=[r.proc.rc for r in self.runs],
            notes=self.notes,
            key=self.key,
        )
        return out


@dataclass
class ScenarioResult:
    sc: Scenario
    rows: list[Row]
    expected_files: int
    expected_bytes: int
    latency: float
    lines: list[str] = field(default_factory=list)  # server check, ceilings, ...
    targets: list[tuple[str, bool | None, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.peer == name and not r.unavailable), None)


# ---------------------------------------------------------------------------------------------
# Running peers
# ---------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        pr.WORK.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="run-", dir=pr.WORK))  # concurrent runs
        self.env = pr.env_for_children()
        self.peers = pr.by_name(args.peers)
        self.failures: list[str] = []

    def log(self, msg: str) -> None:
        if not self.args.quiet:
            print(msg, file=sys.stderr, flush=True)

    def context(self, server: bl.BenchServer, dest: Path, items: list[dict]) -> pr.Context:
        scratch = self.work / "lists"
        scratch.mkdir(exist_ok=True)
        return pr.Context(
            server.base_url, dest, items, self.args.jobs, self.args.api_concurrency, scratch
        )

    def run_peer(
        self,
        peer: pr.Peer,
        server: bl.BenchServer,
        dest: Path,
        *,
        timeout: float | None = None,
        kill_when: Any = None,
        fresh: bool = True,
        reset: bool = True,
    ) -> tuple[bl.ProcResult, bl.LogStats]:
        if fresh:
            bl.fresh_dir(dest)
        items = [] if peer.lists else server.listing()  # not timed
        ctx = self.context(server, dest, items)
        cmd = peer.command(ctx)
        if reset:
            server.reset()
        if self.args.settle and timeout is None:
            bl.wait_quiet(self.args.settle)
        proc = bl.run_measured(
            cmd,
            env=self.env,
            cwd=self.work,
            timeout=timeout or self.args.timeout,
            kill_when=kill_when,
            kill_signal=self.args.kill_signal,
            poll=0.005 if kill_when else 0.01,
        )
        return proc, server.stats()

    def repeat(
        self, res: ScenarioResult, server: bl.BenchServer, dest_root: Path, check: Any = None
    ) -> None:
        """Run every available peer ``--runs`` times, interleaved; a peer whose runs add up to
        more than ``--peer-budget`` seconds is not repeated further."""
        spent: dict[str, float] = {}
        for i in range(self.args.runs):
            for row in res.rows:
                if row.unavailable or spent.get(row.peer, 0.0) > self.args.peer_budget:
                    continue
                peer = next(p for p in self.peers if p.name == row.peer)
                dest = dest_root / peer.name
                self.log(f"  scenario {res.sc.num}: {peer.name} run {i + 1}")
                proc, stats = self.run_peer(peer, server, dest, fresh=res.sc.kind != "noop")
                files, nbytes = bl.data_files(dest)
                rec = RunRecord(proc, stats, files, nbytes, proc.wall)
                row.runs.append(rec)
                spent[row.peer] = spent.get(row.peer, 0.0) + proc.wall
                self.note_run(row, rec, res)
                if check is not None:
                    check(row, rec, dest)
                if res.sc.kind != "noop":
                    shutil.rmtree(dest, ignore_errors=True)

    def note_run(self, row: Row, rec: RunRecord, res: ScenarioResult) -> None:
        p = rec.proc
        if p.timed_out:
            _add(row.notes, f"killed at the {self.args.timeout:.0f} s timeout")
        elif p.rc not in (0, None) and not p.killed:
            _add(row.notes, f"exit {p.rc}")
            if row.peer == "ohpub":
                self.failures.append(
                    f"scenario {res.sc.num}: ohpub exit {p.rc}: {p.stderr.strip()[-300:]}"
                )
        if res.sc.kind in ("download", "throughput") and rec.files != res.expected_files:
            _add(row.notes, f"{rec.files} of {res.expected_files} files on disk")

    def rows(self, sc: Scenario, n_files: int) -> list[Row]:
        out = []
        for peer in self.peers:
            row = Row(peer.name, peer.parallelism(self.args.jobs, self.args.api_concurrency))
            row.unavailable = peer.unavailable()
            out.append(row)
        return out

    # -- scenarios ---------------------------------------------------------------------------

    def scenario(self, sc: Scenario) -> ScenarioResult:
        L = self.args.latency
        self.log(f"scenario {sc.num}: {sc.title}: generating {sc.files} files")
        server = bl.BenchServer(0.0 if sc.kind == "noop" else L, sc.cap)
        try:
            server.generate(sc.files, sc.members, sc.min_size, sc.max_size)
            sizes = server.sizes()
            res = ScenarioResult(sc, self.rows(sc, len(sizes)), len(sizes), sum(sizes), L)
            for row in res.rows:
                if not row.unavailable:
                    peer = next(p for p in self.peers if p.name == row.peer)
                    model = peer.model(self.args.jobs, self.args.api_concurrency, len(sizes))
                    row.floor = model.floor(L, sizes, sc.cap)
            dest_root = bl.fresh_dir(self.work / f"s{sc.num}")
            if sc.kind == "download":
                self.server_check(res, server)
                self.repeat(res, server, dest_root)
            elif sc.kind == "noop":
                self.noop(res, server, dest_root)
            elif sc.kind == "throughput":
                self.throughput(res, server, dest_root)
            else:
                self.resume(res, server, dest_root)
            if self.args.profile and sc.num in (1, 3, 4):
                self.profile(res, server, dest_root)
            for e in server.oh.errors[:3]:
                self.failures.append(f"scenario {sc.num}: server error: {e.strip()[-300:]}")
            shutil.rmtree(dest_root, ignore_errors=True)
            return res
        finally:
            server.stop()

    def profile(self, res: ScenarioResult, server: bl.BenchServer, dest_root: Path) -> None:
        """One more ohpub run under py-spy (--gil: samples the thread holding the GIL, i.e.
        where ohpub's Python code spends CPU); raw stacks and a summary go to
        benchmarks/work/profile/."""
        pyspy = pr.WORK / "tools-venv" / "bin" / "py-spy"
        if not pyspy.exists():
            res.lines.append("profile: py-spy not installed (run benchmarks/setup.sh)")
            return
        out_dir = pr.WORK / "profile"
        out_dir.mkdir(parents=True, exist_ok=True)
        raw = out_dir / f"s{res.sc.num}-ohpub.raw"
        dest = dest_root / "ohpub"
        if res.sc.kind != "noop":
            bl.fresh_dir(dest)
        cmd = pr.Ohpub().command(self.context(server, dest, []))
        server.reset()
        t0 = time.monotonic()
        subprocess.run(
            [str(pyspy), "record", "-r", "250", "--gil", "-f", "raw", "-o", str(raw), "--", *cmd],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        wall = time.monotonic() - t0
        if not raw.exists():
            res.lines.append("profile: py-spy failed (ptrace not permitted?)")
            return
        text, top = summarize_profile(raw, wall)
        (out_dir / f"s{res.sc.num}-ohpub.txt").write_text(text)
        res.lines.append(
            f"profile (py-spy --gil, {wall:.1f} s run): {top}; details in "
            f"benchmarks/work/profile/s{res.sc.num}-ohpub.txt"
        )

    def server_check(self, res: ScenarioResult, server: bl.BenchServer, par: int = 64) -> None:
        """The server must not be the bottleneck: curl at high parallelism over the same
        download URLs (view + storage each), same latency and cap, to /dev/null."""
        if shutil.which("curl") is None:
            res.lines.append("server check: curl not available")
            return
        items = server.listing()[:2000]
        cfg = self.work / "check.cfg"
        cfg.write_text(
            "".join(f'url = "{i["download_url"]}"\noutput = "/dev/null"\n' for i in items)
        )
        server.reset()
        t0 = time.monotonic()
        subprocess.run(
            [
                "curl",
                "-sS",
                "--no-progress-meter",
                "-L",
                "--parallel",
                "--parallel-max",
                str(par),
                "-K",
                str(cfg),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
            check=False,
        )
        wall = time.monotonic() - t0
        st = server.stats()
        n = st.site_requests + st.storage_requests
        ideal = bl.FloorModel(site=par, storage=par, coupled=True).floor(
            server.latency, [server.oh.file(i["id"]).size for i in items], res.sc.cap
        )
        res.extra["server_check"] = {
            "requests": n,
            "seconds": wall,
            "bytes": st.total_bytes,
            "floor": ideal,
        }
        res.lines.append(
            f"server check: curl --parallel-max {par} fetched {len(items)} files ({n} requests, "
            f"{st.total_bytes / MB:.1f} MB) in {wall:.2f} s = {n / wall:.0f} req/s, "
            f"{st.total_bytes / MB / wall:.1f} MB/s (its floor {ideal:.2f} s)"
        )

    def noop(self, res: ScenarioResult, server: bl.BenchServer, dest_root: Path) -> None:
        """Scenario 3: each tool mirrors once without latency (setup, not timed), then the
        timed runs re-mirror the same, unchanged files with latency."""
        setup = []
        for row in res.rows:
            if row.unavailable:
                continue
            peer = next(p for p in self.peers if p.name == row.peer)
            self.log(f"  scenario 3: setup mirror with {peer.name}")
            proc, _ = self.run_peer(peer, server, dest_root / peer.name, timeout=600)
            n, _ = bl.data_files(dest_root / peer.name)
            setup.append(f"{peer.name} {proc.wall:.1f} s ({n} files)")
            if peer.name == "ohpub" and proc.rc != 0:
                self.failures.append(f"scenario 3: ohpub setup exit {proc.rc}: {proc.stderr}")
        res.lines.append("setup (latency 0, not timed): " + ", ".join(setup))
        server.set_latency(res.latency)
        self.listing_alone(res, server)
        # Nothing changed upstream: the only unavoidable work is the listing, page by page.
        for row in res.rows:
            row.floor = res.extra["listing_pages"] * res.latency

        def check(row: Row, rec: RunRecord, dest: Path) -> None:
            if rec.stats.storage_requests:
                _add(row.notes, f"{rec.stats.storage_requests} storage requests")

        self.repeat(res, server, dest_root, check)

    def listing_alone(self, res: ScenarioResult, server: bl.BenchServer) -> None:
        """The time of the listing requests alone: curl fetching ohpub's listing pages one
        after the other on one connection (what no local work at all would cost)."""
        n = res.expected_files
        pages = max(1, math.ceil(n / pr.OHPUB_PAGE))
        base = f"{server.base_url}/api/public/project/{bl.PROJECT}/datafiles/"
        urls = [
            f"{base}?limit={pr.OHPUB_PAGE}" + (f"&offset={i * pr.OHPUB_PAGE}" if i else "")
            for i in range(pages)
        ]
        cmd = ["curl", "-sS", "-H", "Accept: application/json"]
        for u in urls:
            cmd += ["-o", "/dev/null", u]
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            subprocess.run(cmd, env=self.env, check=False, stdout=subprocess.DEVNULL)
            times.append(time.monotonic() - t0)
        t = bl.median(times)
        res.extra["listing_alone"] = t
        res.extra["listing_pages"] = pages
        res.lines.append(
            f"listing alone: {pages} pages of {pr.OHPUB_PAGE} fetched in sequence by curl "
            f"in {t:.2f} s (latency alone: {pages * res.latency:.2f} s)"
        )

    def throughput(self, res: ScenarioResult, server: bl.BenchServer, dest_root: Path) -> None:
        """Scenario 4: one large file without a cap; ceilings first."""
        fid = server.ids[0]
        size = res.expected_bytes
        curl_rates = self.curl_ceiling(server, fid, size)
        serial, parallel, md5_rate, sha_rate = hash_ceiling(server, fid, size)
        curl_rate = max(curl_rates) if curl_rates else math.nan
        ceiling = min(curl_rate, parallel)
        ref = self.pipeline_reference(server, fid, size, dest_root)
        res.extra.update(
            curl_rate=curl_rate,
            hash_serial=serial,
            hash_parallel=parallel,
            ceiling=ceiling,
            md5_rate=md5_rate,
            sha_rate=sha_rate,
        )
        res.lines.append(
            f"ceilings: curl loopback (storage URL to /dev/null, best of {len(curl_rates)}) "
            f"{curl_rate / MB:.0f} MB/s; in-process sha256+md5 of the same bytes "
            f"{serial / MB:.0f} MB/s in one thread, {parallel / MB:.0f} MB/s on two threads "
            f"(sha256 {sha_rate / MB:.0f}, md5 {md5_rate / MB:.0f}); ceiling = "
            f"{ceiling / MB:.0f} MB/s"
        )
        if ref:
            res.extra["pipeline_rate"] = ref
            res.lines.append(
                f"reference: curl | tee FILE | sha256sum, md5sum (C tools, 4 processes, same "
                f"work as ohpub: fetch, write, both hashes) {ref / MB:.0f} MB/s"
            )
        L = res.latency
        for row in res.rows:
            if row.unavailable:
                continue
            peer = next(p for p in self.peers if p.name == row.peer)
            rate = ceiling if peer.hashes else curl_rate
            overhead = (3 if peer.lists else 2) * L
            row.floor = overhead + size / rate

        self.repeat(res, server, dest_root)
        for row in res.rows:
            if row.runs:
                row.key = f"{size / row.wall / MB:.0f} MB/s"

    def pipeline_reference(
        self, server: bl.BenchServer, fid: int, size: int, dest_root: Path
    ) -> float:
        if not all(shutil.which(t) for t in ("curl", "tee", "sha256sum", "md5sum", "bash")):
            return 0.0
        out = dest_root / "pipeline.bin"
        url = server.storage_url(fid)
        script = f"curl -sS '{url}' | tee >(md5sum > /dev/null) '{out}' | sha256sum > /dev/null"
        best = 0.0
        for _ in range(2):
            t0 = time.monotonic()
            subprocess.run(["bash", "-c", script], env=self.env, check=False)
            best = max(best, size / (time.monotonic() - t0))
            out.unlink(missing_ok=True)
        return best

    def curl_ceiling(self, server: bl.BenchServer, fid: int, size: int) -> list[float]:
        if shutil.which("curl") is None:
            return []
        rates = []
        for _ in range(3):
            out = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{time_starttransfer} %{time_total}",
                    server.storage_url(fid),
                ],
                env=self.env,
                check=False,
                capture_output=True,
                text=True,
            ).stdout.split()
            if len(out) == 2 and float(out[1]) > float(out[0]):
                rates.append(size / (float(out[1]) - float(out[0])))
        return rates

    def resume(self, res: ScenarioResult, server: bl.BenchServer, dest_root: Path) -> None:
        """Scenario 5: kill at 50%, run the same command again; bytes sent / file size."""
        size = res.expected_bytes
        L, cap = res.latency, res.sc.cap
        for row in res.rows:
            if row.unavailable:
                continue
            peer = next(p for p in self.peers if p.name == row.peer)
            per_run = (3 if peer.lists else 2) * L
            row.floor = 2 * per_run + (size / cap if cap else 0.0)
        spent: dict[str, float] = {}
        for i in range(self.args.runs):
            for row in res.rows:
                if row.unavailable or spent.get(row.peer, 0.0) > self.args.peer_budget:
                    continue
                peer = next(p for p in self.peers if p.name == row.peer)
                dest = dest_root / peer.name
                self.log(f"  scenario 5: {peer.name} run {i + 1}")

                def half(dest: Path = dest) -> bool:
                    return bl.tree_bytes(dest) >= size // 2

                p1, _ = self.run_peer(peer, server, dest, kill_when=half)
                at = bl.tree_bytes(dest)
                p2, stats = self.run_peer(peer, server, dest, fresh=False, reset=False)
                files, nbytes = bl.data_files(dest)
                p2.peak_rss = max(p1.peak_rss, p2.peak_rss)
                p2.cpu += p1.cpu
                rec = RunRecord(p2, stats, files, nbytes, p1.wall + p2.wall)
                row.runs.append(rec)
                spent[row.peer] = spent.get(row.peer, 0.0) + rec.wall
                if not p1.killed:
                    _add(row.notes, "finished before the kill")
                else:
                    _add(row.notes, f"killed at {at / size:.0%}")
                if nbytes != size or files != 1:
                    _add(row.notes, f"result: {files} file(s), {nbytes} bytes")
                self.note_run(row, rec, res)
                shutil.rmtree(dest, ignore_errors=True)
        for row in res.rows:
            if row.runs:
                ratio = row.typical.stats.bytes_sent.get("storage", 0) / size
                row.key = f"{ratio:.3f}x"


def summarize_profile(raw: Path, wall: float, rate: int = 250) -> tuple[str, str]:
    """Top self and inclusive frames of py-spy's raw (collapsed) stacks."""
    import collections
    import re

    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not n_text.isdigit():
            continue
        n = int(n_text)
        total += n
        frames = [
            re.sub(r" \((.*?):\d+\)$", r" (\1)", f)
            for f in stack.split(";")
            if not f.startswith(("thread ", "process "))
        ]
        if frames:
            self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "no samples\n", "no samples"
    cpu = total / rate
    lines = [
        f"{total} samples at {rate} Hz = {cpu:.2f} s holding the GIL in a {wall:.2f} s run",
        "",
        "self (function, file):",
    ]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in self_t.most_common(25)]
    lines += ["", "inclusive, ohpub frames:"]
    ours = [(f, n) for f, n in incl.most_common() if "ohpub/" in f]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in ours[:40]]
    driver = (
        "main ",
        "_guarded",
        "_Group",
        "mirror_cmd",
        "Mirror.run ",
        "Mirror._run ",
        "<module>",
        "Thread",
        "_worker",
        "_WorkItem",
    )
    top = ", ".join(
        f"{f.split(' (')[0]} {n / total:.0%}" for f, n in ours if not f.startswith(driver)
    )
    top = ", ".join(top.split(", ")[:7])
    imports = sum(n for f, n in incl.items() if f.startswith("_find_and_load ")) / total
    lines.insert(1, f"imports: {imports:.0%} of the samples")
    return "\n".join(lines) + "\n", (
        f"{cpu:.2f} s holding the GIL; imports {imports:.0%}; inclusive: {top}"
    )


def hash_ceiling(server: bl.BenchServer, fid: int, size: int) -> tuple[float, float, float, float]:
    """In-process sha256+md5 throughput over (up to 256 MiB of) the file's own bytes:
    both in one thread, and each on its own thread (hashlib releases the GIL)."""
    content = server.oh.file(fid).content
    n = min(size, 256 * KIB * KIB)
    chunks = list(content.iter_range(0, n, 1 << 20))

    def run(fn: Any) -> float:
        t0 = time.perf_counter()
        fn()
        return n / (time.perf_counter() - t0)

    def serial() -> None:
        s, m = hashlib.sha256(), hashlib.md5()
        for c in chunks:
            s.update(c)
            m.update(c)

    def one(name: str) -> None:
        h = hashlib.new(name)
        for c in chunks:
            h.update(c)

    def parallel() -> None:
        ts = [threading.Thread(target=one, args=(a,)) for a in ("sha256", "md5")]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    best = [0.0, 0.0, 0.0, 0.0]
    for _ in range(3):
        vals = [run(serial), run(parallel), run(lambda: one("md5")), run(lambda: one("sha256"))]
        best = [max(a, b) for a, b in zip(best, vals, strict=True)]
    return best[0], best[1], best[2], best[3]


def _add(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


def timeline(row: Row, args: argparse.Namespace) -> str:
    t = row.typical
    p, st = t.proc, t.stats
    if st.first_start is None or st.last_end is None:
        return ""
    span = max(1e-9, st.last_end - st.first_start)
    jobs = args.jobs
    return (
        f"{row.peer} timeline (median run): first request {st.first_start - p.started:.2f} s "
        f"after start, exit {p.ended - st.last_end:.2f} s after the last response; in "
        f"between ({span:.2f} s) Open Humans slots busy "
        f"{st.site_busy / (args.api_concurrency * span):.0%}, storage slots "
        f"{st.storage_busy / (jobs * span):.0%}"
    )


def evaluate(res: ScenarioResult, args: argparse.Namespace) -> None:
    sc, t = res.sc, res.targets
    o = res.row("ohpub")
    if o is None or not o.runs:
        t.append(("ohpub ran", False, "no ohpub result"))
        return
    if sc.kind != "resume":
        for row in res.rows:
            if row.peer.startswith("ohpub") and row.runs and not row.unavailable:
                line = timeline(row, args)
                if line:
                    res.lines.append(line)
    rss_mb = o.rss / MB
    t.append(("peak RSS < 100 MB", rss_mb < 100, f"{rss_mb:.0f} MB"))
    peak_site = max(r.stats.peak_roles.get("site", 0) for r in o.runs)
    peak_sto = max(r.stats.peak_roles.get("storage", 0) for r in o.runs)
    if sc.kind in ("download", "noop"):
        t.append(
            (
                f"Open Humans in flight <= {args.api_concurrency}",
                peak_site <= args.api_concurrency,
                f"peak {peak_site} (server's peak_in_flight['site']); storage peak {peak_sto}",
            )
        )
    ratio = o.wall / o.floor if o.floor else math.nan
    if sc.num == 1:
        t.append(
            ("<= 1.2x floor", ratio <= 1.2, f"{o.wall:.2f} s / {o.floor:.2f} s = {ratio:.2f}x")
        )
        od = res.row("ohpub-download")
        if od is not None and od.runs:
            speed = od.wall / o.wall
            od_peak = max(r.stats.peak_roles.get("site", 0) for r in od.runs)
            t.append(
                (
                    ">= 2x faster than ohpub-download",
                    speed >= 2.0,
                    f"{od.wall:.2f} s / {o.wall:.2f} s = {speed:.2f}x; Open Humans in "
                    f"flight: ohpub {peak_site}, ohpub-download {od_peak}",
                )
            )
        else:
            t.append((">= 2x faster than ohpub-download", None, "ohpub-download not available"))
        pages = math.ceil(res.expected_files / pr.OHPUB_PAGE)
        overl = [
            r.stats.first_storage_start is not None
            and r.stats.last_listing_end is not None
            and r.stats.first_storage_start < r.stats.last_listing_end
            for r in o.runs
        ]
        r0 = o.typical.stats
        lead = (r0.last_listing_end or 0) - (r0.first_storage_start or 0)
        if pages < 2:
            t.append(("listing overlaps downloading", None, "one listing page only"))
        else:
            t.append(
                (
                    "listing overlaps downloading",
                    all(overl),
                    f"first storage GET {lead:.2f} s before the last of {pages} listing pages ended"
                    if all(overl)
                    else "storage started only after the listing",
                )
            )
    elif sc.num == 2:
        t.append(
            ("<= 1.1x floor", ratio <= 1.1, f"{o.wall:.2f} s / {o.floor:.2f} s = {ratio:.2f}x")
        )
    elif sc.num == 3:
        sto = max(r.stats.storage_requests for r in o.runs)
        t.append(("no storage request", sto == 0, f"{sto} storage requests"))
        alone = res.extra.get("listing_alone", math.nan)
        r3 = o.wall / alone
        t.append(
            (
                "<= 1.5x the listing requests alone",
                r3 <= 1.5,
                f"{o.wall:.2f} s / {alone:.2f} s = {r3:.2f}x",
            )
        )
    elif sc.num == 4:
        rate = res.expected_bytes / o.wall
        ceiling = res.extra.get("ceiling", math.nan)
        t.append(
            (
                ">= 0.8x the physical ceiling",
                rate >= 0.8 * ceiling,
                f"{rate / MB:.0f} MB/s end to end = {rate / ceiling:.2f}x of "
                f"{ceiling / MB:.0f} MB/s",
            )
        )
    elif sc.num == 5:
        ratio5 = o.typical.stats.bytes_sent.get("storage", 0) / res.expected_bytes
        t.append(("<= 1.05x the file size transferred", ratio5 <= 1.05, f"{ratio5:.3f}x"))


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def fmt_size(n: int) -> str:
    if n >= 1000 * MB:
        return f"{n / (1000 * MB):.1f} GB"
    if n >= MB:
        return f"{n / MB:.1f} MB"
    return f"{n / KB:.0f} kB"


def describe(sc: Scenario, latency: float, n: int, total: int) -> str:
    sizes = (
        fmt_size(sc.min_size)
        if sc.min_size == sc.max_size
        else f"{fmt_size(sc.min_size)}-{fmt_size(sc.max_size)}"
    )
    cap = f", cap {fmt_size(sc.cap)}/s per connection" if sc.cap else ", no cap"
    return (
        f"{n} file(s) of {sizes} ({fmt_size(total)}) across {sc.members} member(s), "
        f"latency {latency * 1000:.0f} ms{cap}"
    )


HEADERS = [
    "peer",
    "parallelism",
    "wall s",
    "runs",
    "floor s",
    "x floor",
    "x ohpub",
    "peak RSS MB",
    "CPU s",
    "other load",
    "requests site+storage",
    "in flight site/storage",
    "MB sent",
    "files",
    "key",
    "notes",
]


def table(res: ScenarioResult) -> str:
    key_name = {4: "MB/s", 5: "sent/size"}.get(res.sc.num, "")
    headers = [h if h != "key" else key_name for h in HEADERS]
    o = res.row("ohpub")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in res.rows:
        if r.unavailable:
            cells = [r.peer, r.parallelism, "not available", *[""] * 12, r.unavailable]
        elif not r.runs:
            cells = [r.peer, r.parallelism, "no run", *[""] * 13]
        else:
            t = r.typical
            st = t.stats
            wall = f"{r.wall:.2f}"
            cut = any(x.proc.timed_out for x in r.runs)
            if cut:
                wall = f"> {r.wall:.0f}"
            gt = "> " if cut else ""
            cells = [
                r.peer,
                r.parallelism,
                wall,
                str(len(r.runs)),
                f"{r.floor:.2f}",
                f"{gt}{r.wall / r.floor:.2f}" if r.floor else "-",
                f"{gt}{r.wall / o.wall:.2f}" if o and o.runs else "-",
                f"{r.rss / MB:.0f}" + (f" ({t.proc.procs} procs)" if t.proc.procs > 1 else ""),
                "n/a" if cut else f"{bl.median([x.proc.cpu for x in r.runs]):.2f}",
                f"{bl.median([x.proc.other_cpu / x.proc.wall for x in r.runs]):.2f}",
                f"{st.site_requests}+{st.storage_requests}",
                f"{max(x.stats.peak_roles.get('site', 0) for x in r.runs)}/"
                f"{max(x.stats.peak_roles.get('storage', 0) for x in r.runs)}",
                f"{st.total_bytes / MB:.1f}",
                f"{t.files}",
                r.key or "",
                "; ".join(r.notes),
            ]
        if not key_name:
            del cells[headers.index("")]
        lines.append("| " + " | ".join(cells) + " |")
    if not key_name:
        lines[0] = lines[0].replace(" |  |", " |", 1)
        lines[1] = "|" + "---|" * (len(headers) - 1)
    return "\n".join(lines)


def render(res: ScenarioResult) -> str:
    out = [
        f"### Scenario {res.sc.num}: {res.sc.title}",
        "",
        describe(res.sc, res.latency, res.expected_files, res.expected_bytes),
        "",
    ]
    out += [table(res), ""]
    out += [f"- {line}" for line in res.lines]
    for name, ok, why in res.targets:
        mark = "n/a" if ok is None else ("MET" if ok else "MISSED")
        out.append(f"- target {name}: **{mark}** ({why})")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def serve(sc: Scenario, args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server cleanly
    server = bl.BenchServer(args.latency, sc.cap)
    try:
        server.generate(sc.files, sc.members, sc.min_size, sc.max_size)
        print(
            f"scenario {sc.num} ({sc.title}): "
            f"{describe(sc, args.latency, sc.files, sum(server.sizes()))}"
        )
        print(
            f"OHPUB_BASE_URL={server.base_url}   (project {bl.PROJECT}; Ctrl-C stops)", flush=True
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="ohpub side by side with ohpub-download, wget, curl and aria2c, against "
        "the floor that latency and bandwidth caps impose. Prints one table per scenario.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny data, 1 run, < 60 s: the CI smoke size (checks that everything "
        "runs, not timings)",
    )
    p.add_argument(
        "--scenario",
        "-s",
        type=int,
        action="append",
        choices=[1, 2, 3, 4, 5],
        help="run only this scenario (repeatable); default all",
    )
    p.add_argument("--runs", type=int, default=None, help="runs per peer (default 3; quick 1)")
    p.add_argument(
        "--peers",
        help="comma-separated subset of: ohpub, ohpub-download, wget, "
        "curl, aria2c (ohpub always runs)",
    )
    p.add_argument(
        "--latency",
        type=float,
        default=None,
        help="seconds added to every request (default 0.030; quick 0.005)",
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=8,
        help="storage parallelism for ohpub, curl and aria2c (default 8)",
    )
    p.add_argument(
        "--api-concurrency",
        type=int,
        default=4,
        help="ohpub's requests in flight to Open Humans (default 4)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds before a run is killed (default 150; quick 30)",
    )
    p.add_argument(
        "--peer-budget",
        type=float,
        default=None,
        help="stop repeating a peer once its runs in a scenario took this many "
        "seconds (default 60)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        help="before each timed run, wait up to this many seconds for other "
        "processes to go quiet (< 0.15 cores; default 20, quick 0)",
    )
    p.add_argument(
        "--kill-signal",
        default="KILL",
        choices=["KILL", "TERM", "INT"],
        help="signal for the scenario 5 interruption (default KILL)",
    )
    p.add_argument("--s1-files", type=int)
    p.add_argument("--s2-files", type=int)
    p.add_argument("--s2-size", type=int, help="bytes per file")
    p.add_argument("--s2-cap", type=int, help="bytes/s per storage connection")
    p.add_argument("--s3-files", type=int)
    p.add_argument("--s4-size", type=int, help="bytes")
    p.add_argument("--s5-size", type=int, help="bytes")
    p.add_argument("--s5-cap", type=int, help="bytes/s (to kill at 50%% precisely)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="after scenarios 1, 3 and 4, profile one ohpub run with py-spy "
        "(--gil: Python CPU); summaries in benchmarks/work/profile/",
    )
    p.add_argument(
        "--serve",
        type=int,
        choices=[1, 2, 3, 4, 5],
        metavar="N",
        help="only start the server with scenario N's data, latency and cap, "
        "print its URL and wait (Ctrl-C stops): for manual runs and profiling",
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.latency = args.latency if args.latency is not None else (0.005 if args.quick else 0.030)
    args.timeout = args.timeout or (30.0 if args.quick else 150.0)
    args.peer_budget = (
        args.peer_budget if args.peer_budget is not None else (0.0 if args.quick else 60.0)
    )
    args.kill_signal = getattr(signal, f"SIG{args.kill_signal}")
    args.settle = args.settle if args.settle is not None else (0.0 if args.quick else 20.0)
    return args


SUBCOMMANDS = {
    "transfer": "transfer",
    "scale": "scale",
    "startup": "startup",
    "profile": "profile_bytepath",
    "capacity": "capacity",
}
"""``run.py transfer ...`` (issues 13 and 20: big files, HTTP/HTTPS, parallel ranges),
``run.py scale ...`` (issue 10: 10,000-100,000 files), ``run.py startup ...`` (issue 20:
start-up, the interpreter's share of a no-op), ``run.py profile ...`` (issue 20: where
one big download's time goes, per thread) and ``run.py capacity ...`` (issue 17: a server
with the real one's capacity); without one, scenarios 1-5."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    bl.byte_compile()  # ohpub as installed (see byte_compile)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        return int(importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:]))
    args = parse_args(argv)
    all_sc = scenarios(args)
    if args.serve:
        return serve(all_sc[args.serve], args)
    bench = Bench(args)
    wanted = sorted(set(args.scenario or [1, 2, 3, 4, 5]))
    started = time.monotonic()
    print(f"# ohpub benchmark ({'quick' if args.quick else 'full'})\n")
    print(f"machine: {bl.machine()}; date {bl.utc_now()}")
    print(f"ohpub source: {bl.source_state()}")
    print(
        f"ohpub: {sys.executable}; jobs {args.jobs}, api-concurrency {args.api_concurrency}; "
        f"runs {args.runs} (median), peer budget {args.peer_budget:.0f} s\n",
        flush=True,
    )
    results = []
    for num in wanted:
        res = bench.scenario(all_sc[num])
        evaluate(res, args)
        results.append(res)
        print(render(res), flush=True)
    elapsed = time.monotonic() - started
    print(f"total benchmark time {elapsed:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "scenario": r.sc.num,
                        "title": r.sc.title,
                        "latency": r.latency,
                        "files": r.expected_files,
                        "bytes": r.expected_bytes,
                        "lines": r.lines,
                        "extra": r.extra,
                        "targets": r.targets,
                        "rows": [x.as_dict() for x in r.rows],
                    }
                    for r in results
                ],
                indent=1,
                default=str,
            )
        )
    shutil.rmtree(bench.work, ignore_errors=True)
    missing = [
        f"scenario {r.sc.num}: {row.peer}"
        for r in results
        for row in r.rows
        if not row.unavailable and not row.runs
    ]
    for f in bench.failures + [f"{m} did not run" for m in missing]:
        print(f"benchmark problem: {f}", file=sys.stderr)
    return 1 if bench.failures or missing else 0


if __name__ == "__main__":
    sys.exit(main())
