"""Issue 10: a mirror of 10,000-100,000 tiny files, with members longer than a page.

    python -m benchmarks.run scale [--sizes 10000,30000,100000] [--per-member 1000]
                                   [--orders same_ties,shuffle] ...

For each size N: a fresh server with N tiny files spread over N / per-member members (so
members hold more files than a listing page), 30 ms latency on every request; then

- **seed**: ``ohpub mirror DEST -p 300 -j J`` into an empty DEST (exit code, files on
  disk, wall time, peak RSS), once;
- for each server order (issue 20): ``same_ties``, the real server's (a member's files in
  the same order for every request with the same ``offset + limit``), and ``shuffle``
  (reordered on every request):
  - **no-op**: the same command again, nothing changed upstream (wall, peak RSS,
    requests, records the server listed);
  - **listing alone** (the plain listing): a plain requests client
    (``benchmarks/listing_alone.py``) fetching the project's listing in pages of 500 (the
    page of 0.3.0), the first alone and then at most A in flight; the same client
    replaying exactly the API requests the no-op run made; and ``ohpub list -p 300``.

Then the slope of each curve (least squares over the sizes): seconds and KB of peak RSS
per 1,000 files. Tiny files, so the tool's own per-file costs show.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlencode

import benchlib as bl
import peers as pr

MB = 1000 * 1000
LISTER = Path(__file__).resolve().parent / "listing_alone.py"


@dataclass
class Measure:
    wall: float
    rss: int
    rc: int | None
    site: int = 0
    storage: int = 0
    note: str = ""
    records: int = 0
    """Records the server listed (file listings answered 200)."""


@dataclass
class SizeResult:
    files: int
    members: int
    generate_s: float
    seed: Measure
    files_on_disk: int
    noop: Measure
    listing_pages: int
    listing_alone: Measure
    replay_requests: int
    replay: Measure
    ohpub_list: Measure
    order: str = "shuffle"
    load: str = ""
    """The load average when the order's runs began (other engineers share the machine)."""


def _measure(proc: bl.ProcResult, stats: bl.LogStats | None = None) -> Measure:
    note = ""
    if proc.timed_out:
        note = "timed out"
    elif proc.rc != 0:
        note = f"exit {proc.rc}: {(proc.stderr.strip().splitlines() or [''])[-1]}"
    m = Measure(wall=proc.wall, rss=proc.peak_rss, rc=proc.rc, note=note)
    if stats is not None:
        m.site, m.storage = stats.site_requests, stats.storage_requests
    return m


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


class ScaleBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        pr.WORK.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="scale-", dir=pr.WORK))
        self.env = pr.env_for_children()
        self.problems: list[str] = []

    def log(self, msg: str) -> None:
        if not self.args.quiet:
            print(msg, file=sys.stderr, flush=True)

    def run(self, server: bl.BenchServer, cmd: list[str]) -> tuple[bl.ProcResult, bl.LogStats]:
        server.reset()
        if self.args.settle:
            bl.wait_quiet(self.args.settle)
        proc = bl.run_measured(
            cmd, env=server.client_env(self.env), cwd=self.work, timeout=self.args.timeout
        )
        stats = server.stats()
        self.records = server.oh.listing_stats().records_served
        return proc, stats

    def measured(self, server: bl.BenchServer, cmd: list[str]) -> Measure:
        proc, st = self.run(server, cmd)
        m = _measure(proc, st)
        m.records = self.records
        return m

    def ohpub(self, server: bl.BenchServer, *args: str) -> list[str]:
        return [
            *pr._ohpub_exe(),
            "--base-url",
            server.base_url,
            "--quiet",
            "--api-concurrency",
            str(self.args.api_concurrency),
            *args,
        ]

    def lister(self, server: bl.BenchServer, urls: list[str], name: str) -> bl.ProcResult:
        path = self.work / f"{name}.txt"
        path.write_text("".join(u + "\n" for u in urls))
        cmd = [sys.executable, str(LISTER), "--concurrency", str(self.args.api_concurrency)]
        proc, _ = self.run(server, [*cmd, str(path)])
        return proc

    def size(self, n: int) -> list[SizeResult]:
        a = self.args
        members = max(1, math.ceil(n / a.per_member))
        self.log(f"scale {n}: generating {n} files over {members} members")
        server = bl.BenchServer(a.seed_latency)
        try:
            t0 = time.monotonic()
            server.generate(n, members, a.min_size, a.max_size)
            gen = time.monotonic() - t0
            dest = bl.fresh_dir(self.work / f"m{n}")
            mirror = self.ohpub(server, "mirror", str(dest), "-p", str(bl.PROJECT))
            mirror += ["--jobs", str(a.jobs)]
            self.log(f"scale {n}: seed mirror (latency {a.seed_latency * 1000:.0f} ms)")
            proc, st = self.run(server, mirror)
            seed = _measure(proc, st)
            on_disk, _ = bl.data_files(dest)
            server.set_latency(a.latency)
            out = []
            for order in a.orders:
                server.oh.same_ties = order == "same_ties"
                out.append(self.order(server, n, members, gen, seed, on_disk, mirror, order))
            shutil.rmtree(dest, ignore_errors=True)
            return out
        finally:
            server.stop()

    def order(
        self,
        server: bl.BenchServer,
        n: int,
        members: int,
        gen: float,
        seed: Measure,
        on_disk: int,
        mirror: list[str],
        order: str,
    ) -> SizeResult:
        """The no-op, the plain listing, the replay and ``ohpub list`` under one order."""
        load = _load()
        self.log(f"scale {n} ({order}): no-op mirror (load {load})")
        noop = self.measured(server, mirror)
        with server.oh._lock:
            api_targets = [
                e.path + ("?" + urlencode(e.query) if e.query else "")
                for e in server.oh.log
                if e.role == "api" and e.method == "GET"
            ]
        page = pr.OHPUB_PAGE
        pages = max(1, math.ceil(n / page))
        base = f"{server.base_url}/api/public/project/{bl.PROJECT}/datafiles/"
        urls = [f"{base}?limit={page}&offset={i * page}" for i in range(pages)]
        self.log(f"scale {n} ({order}): listing alone ({pages} pages), replay, ohpub list")
        alone = _measure(self.lister(server, urls, "pages"))
        alone.records = self.records
        replay = _measure(self.lister(server, [server.base_url + t for t in api_targets], "replay"))
        replay.records = self.records
        listed = self.measured(server, self.ohpub(server, "list", "-p", str(bl.PROJECT)))
        for label, m in (("seed", seed), ("no-op", noop), ("ohpub list", listed)):
            if m.note:  # a result (shown in the table), not a failure of the benchmark
                self.log(f"scale {n}: ohpub {label}: {m.note}")
        for label, m in (("listing alone", alone), ("replay", replay)):
            if m.note:
                self.problems.append(f"scale {n}: {label}: {m.note}")
        for e in server.oh.errors[:3]:
            self.problems.append(f"scale {n}: server error: {e.strip()[-300:]}")
        return SizeResult(
            n,
            members,
            gen,
            seed,
            on_disk,
            noop,
            pages,
            alone,
            len(api_targets),
            replay,
            listed,
            order,
            load,
        )


def target(r: SizeResult) -> float:
    """Issue 20: a no-op at most 2x its listing alone at 3,000 files and below; above, 1.3x
    the plain listing under the real server's order, 1.6x under reshuffling."""
    if r.files <= 3000:
        return 2.0
    return 1.3 if r.order == "same_ties" else 1.6


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (nan with fewer than two distinct xs)."""
    if len(set(xs)) < 2:
        return math.nan
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def render(results: list[SizeResult], args: argparse.Namespace) -> str:
    out = [
        "| files (members) | order (load) | seed s | seed exit, files on disk | seed peak RSS MB "
        "| no-op s | no-op peak RSS MB | no-op requests site+storage | no-op records listed "
        "| listing alone s (pages) | no-op / listing alone | replay of the no-op's API "
        "requests s (n) | ohpub list s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = r.noop.wall / r.listing_alone.wall if r.listing_alone.wall else math.nan
        out.append(
            f"| {r.files:,} ({r.members:,}) | {r.order} ({r.load}) | {r.seed.wall:.1f} | "
            f"{r.seed.rc}, {r.files_on_disk:,} | {r.seed.rss / MB:.0f} | {r.noop.wall:.2f} | "
            f"{r.noop.rss / MB:.0f} | {r.noop.site}+{r.noop.storage} | "
            f"{r.noop.records:,} ({r.noop.records / max(1, r.files):.2f}x) | "
            f"{r.listing_alone.wall:.2f} ({r.listing_pages}) | {ratio:.2f}x | "
            f"{r.replay.wall:.2f} ({r.replay_requests}) | {r.ohpub_list.wall:.2f} |"
        )
    every = results
    results = [r for r in every if r.order == every[0].order] if every else []
    # the slopes and the RSS growth are per order: the first one measured
    xs = [float(r.files) for r in results]

    def per_k(values: list[float]) -> float:
        return slope(xs, values) * 1000

    lines = [""]
    if len(set(xs)) >= 2:
        lines.append(
            "slopes per 1,000 files (least squares over the sizes): "
            f"seed {per_k([r.seed.wall for r in results]):.2f} s, "
            f"no-op {per_k([r.noop.wall for r in results]):.3f} s, "
            f"listing alone {per_k([r.listing_alone.wall for r in results]):.3f} s, "
            f"seed peak RSS {per_k([r.seed.rss / 1000 for r in results]):.0f} KB, "
            f"no-op peak RSS {per_k([r.noop.rss / 1000 for r in results]):.0f} KB"
        )
    else:
        lines.append("slopes: need two sizes or more")
    for r in every:
        ratio = r.noop.wall / r.listing_alone.wall if r.listing_alone.wall else math.nan
        complete = r.seed.rc == 0 and r.files_on_disk == r.files
        goal = target(r)
        lines.append(
            f"- {r.files:,} files, {r.order}: seed complete with exit 0: "
            f"**{'MET' if complete else 'MISSED'}**; no-op <= {goal}x listing alone: "
            f"**{'MET' if ratio <= goal else 'MISSED'}** ({ratio:.2f}x); no-op storage "
            "requests 0: "
            f"**{'MET' if r.noop.storage == 0 else 'MISSED'}** ({r.noop.storage}); "
            f"generate {r.generate_s:.1f} s (not timed)"
            + (f"; seed: {r.seed.note}" if r.seed.note else "")
            + (f"; no-op: {r.noop.note}" if r.noop.note else "")
        )
        if r.files >= 100_000:
            rss = max(r.seed.rss, r.noop.rss) / MB
            lines.append(
                f"- {r.files:,} files: peak RSS <= 150 MB: **{'MET' if rss <= 150 else 'MISSED'}**"
                f" ({rss:.0f} MB)"
            )
    small = [r for r in results if r.files == min(xs)]
    big = [r for r in results if r.files == max(xs)]
    if small and big and big[0].files > small[0].files:
        a, b = small[0], big[0]
        growth = (max(b.seed.rss, b.noop.rss) - max(a.seed.rss, a.noop.rss)) / (b.files - a.files)
        lines.append(
            f"- peak RSS growth {a.files:,} -> {b.files:,} files <= 0.5 KB per file: "
            f"**{'MET' if growth <= 500 else 'MISSED'}** ({growth / 1000:.2f} KB per file)"
        )
    return "\n".join(out + lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run scale",
        description="Issue 10: seed and no-op mirrors of 10,000-100,000 tiny files (members "
        "longer than a page) against the listing alone; peak RSS; slopes.",
    )
    p.add_argument("--quick", action="store_true", help="one tiny size (smoke test)")
    p.add_argument("--sizes", help="comma-separated file counts (default 10000,30000,100000)")
    p.add_argument("--per-member", type=int, default=None, help="files per member (1000)")
    p.add_argument("--latency", type=float, default=None, help="seconds per request (0.030)")
    p.add_argument(
        "--seed-latency",
        type=float,
        default=None,
        help="latency during the seed mirror (default: --latency; 0 makes 100,000 quick)",
    )
    p.add_argument("--jobs", "-j", type=int, default=8)
    p.add_argument("--api-concurrency", type=int, default=4)
    p.add_argument(
        "--orders",
        default=None,
        help="server orders to measure the no-op under: same_ties (the real server's), "
        "shuffle (default: both; --quick: shuffle)",
    )
    p.add_argument("--min-size", type=int, default=100)
    p.add_argument("--max-size", type=int, default=2000)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per ohpub run")
    p.add_argument("--settle", type=float, default=None, help="wait for quiet (default 10 s)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument(
        "--render",
        metavar="JSON,...",
        help="run nothing: print one table from the --json files of earlier runs (sizes "
        "measured separately, e.g. 100,000 on its own)",
    )
    p.add_argument("--quiet", "-q", action="store_true")
    args = p.parse_args(argv)
    q = args.quick
    default_sizes = "1200" if q else "10000,30000,100000"
    args.sizes = [int(x.replace("_", "")) for x in (args.sizes or default_sizes).split(",")]
    args.per_member = args.per_member or (600 if q else 1000)
    args.latency = args.latency if args.latency is not None else (0.005 if q else 0.030)
    args.seed_latency = args.seed_latency if args.seed_latency is not None else args.latency
    args.settle = args.settle if args.settle is not None else (0.0 if q else 10.0)
    args.orders = (args.orders or ("shuffle" if q else "same_ties,shuffle")).split(",")
    bad = set(args.orders) - {"same_ties", "shuffle"}
    if bad:
        p.error(f"unknown order {', '.join(sorted(bad))}")
    return args


def load(path: Path) -> list[SizeResult]:
    out = []
    for d in json.loads(path.read_text()):
        d.setdefault("order", "shuffle")
        for key in ("seed", "noop", "listing_alone", "replay", "ohpub_list"):
            d[key] = Measure(**d[key])
        out.append(SizeResult(**d))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        loaded = [r for name in args.render.split(",") for r in load(Path(name))]
        print(render(sorted(loaded, key=lambda r: r.files), args))
        return 0
    bench = ScaleBench(args)
    started = time.monotonic()
    print(f"# ohpub scale benchmark ({'quick' if args.quick else 'full'})\n")
    print(f"- date: {bl.utc_now()}")
    print(f"- machine: {bl.machine()}")
    print(f"- ohpub source: {bl.source_state()}")
    print(
        f"- {args.per_member} files per member (page {pr.OHPUB_PAGE}), {args.min_size}-"
        f"{args.max_size} bytes each; latency {args.latency * 1000:.0f} ms "
        f"(seed {args.seed_latency * 1000:.0f} ms); jobs {args.jobs}, api-concurrency "
        f"{args.api_concurrency}\n",
        flush=True,
    )
    results: list[SizeResult] = []
    try:
        for n in args.sizes:
            results.extend(bench.size(n))
            print(f"(done {n:,} files at {time.monotonic() - started:.0f} s)", flush=True)
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    print()
    print(render(results, args), flush=True)
    print(f"total benchmark time {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1, default=str))
    for problem in bench.problems:
        print(f"benchmark problem: {problem}", file=sys.stderr)
    return 1 if bench.problems else 0
