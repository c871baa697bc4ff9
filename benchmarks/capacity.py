"""Issue 17: a listing against a server with the real one's capacity, scaled down.

    python -m benchmarks.run capacity [--files 6293] [--scale 0.05] [--orders stable,same_ties]

The local server with its capacity model on (``tests.ohserver.Capacity``), at ``scale``
of real time: every listed record costs 16 ms x scale of CPU on one core (the loaded
2-core machine of reference section 6: 13-16 ms per record, the other core busy), and the
router answers HTTP 500 once a request has run 30 s x scale. The data is shaped like the
real server's 6,293 public files: one member of 2,990 files in one visible membership, one
member whose visible (1,200) and hidden (418) memberships are mixed, the rest in members
of 5-200 files; each file 100-2,000 bytes. ohpub runs unfiltered at its defaults (four
requests in flight) and is told the scaled limit (``OHPUB_SERVER_TIME_LIMIT``).

For each server order (``stable``: a member's order never changes, as the real server's
for one visible membership; ``same_ties``: reordered for every request end; ``shuffle``:
reordered on every request):

- **seed**: ``ohpub mirror DEST`` into an empty DEST; **no-op**: the same again;
- **plain listing**: the main listing's pages of 500 one at a time, each body parsed (the
  reference's "plain sequential crawl", which loses the files its boundaries cut);

each with its wall time, exit code and what the server counted: listing requests, worker
timeouts, timed-out requests re-sent unchanged, records listed, and records asked for
beyond one read of each file ("re-sent records": re-read or timed out).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import benchlib as bl
import peers as pr

from tests.ohserver import Capacity, SyntheticContent

LISTER = Path(__file__).resolve().parent / "listing_alone.py"
PAGE = 500
HIDDEN_PROJECT = bl.PROJECT + 1


@dataclass
class Row:
    """One measured run and what the server counted during it."""

    what: str
    wall: float
    rc: int | None
    files: int = 0
    requests: int = 0
    timeouts: int = 0
    repeated: int = 0
    records: int = 0
    timed_out_records: int = 0
    resent: int = 0
    rss: int = 0
    note: str = ""


def build(server: bl.BenchServer, files: int, seed: int) -> int:
    """The reference's shape; returns the number of public files."""
    oh = server.oh
    rng = random.Random(seed)
    with oh._lock:
        oh.add_project(bl.PROJECT, "Capacity Project")
        oh.add_project(HIDDEN_PROJECT, "Hidden Project")
    scale = min(1.0, files / 6293)  # (--quick: the same shape, smaller)
    big, mixed_visible, mixed_hidden = (max(1, round(x * scale)) for x in (2990, 1200, 418))
    rest = max(0, files - big - mixed_visible - mixed_hidden)
    sizes = []
    while sum(sizes) < rest:
        sizes.append(min(rng.randint(5, 200), rest - sum(sizes)))
    members = [("m_big", big)] + [(f"m{i:04d}", n) for i, n in enumerate(sizes)]
    members.insert(len(members) // 2, ("m_mixed", mixed_visible))
    total = 0
    for name, n in sorted(members):
        oh.add_member(name, name)
        for k in range(n):
            _file(oh, name, bl.PROJECT, k, rng)
        total += n
        if name == "m_mixed":
            for k in range(mixed_hidden):
                _file(oh, name, HIDDEN_PROJECT, k, rng)
            oh.hide_membership(name, HIDDEN_PROJECT)
            total += mixed_hidden
    return total


def _file(oh: object, user: str, project: int, k: int, rng: random.Random) -> None:
    size = rng.randint(100, 2000)
    oh.add_file(  # type: ignore[attr-defined]
        basename=f"data-{k % 9}.json",
        content=SyntheticContent(size, seed=rng.getrandbits(32)),
        project_id=project,
        username=user,
    )


class CapacityBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        pr.WORK.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="capacity-", dir=pr.WORK))
        self.env = pr.env_for_children()
        limit = 30.0 * args.scale
        self.env["OHPUB_SERVER_TIME_LIMIT"] = f"{limit:g}"
        self.capacity = Capacity(per_record=0.016 * args.scale, cores=1, timeout=limit)

    def log(self, msg: str) -> None:
        if not self.args.quiet:
            print(msg, file=sys.stderr, flush=True)

    def measure(
        self, server: bl.BenchServer, what: str, cmd: list[str], n: int, dest: Path | None
    ) -> Row:
        server.reset()
        proc = bl.run_measured(cmd, env=self.env, cwd=self.work, timeout=self.args.timeout)
        server.quiesce()
        st = server.oh.listing_stats()
        on_disk = bl.data_files(dest)[0] if dest is not None else 0
        note = "" if proc.rc == 0 else (proc.stderr.strip().splitlines() or [""])[-1][-160:]
        return Row(
            what,
            proc.wall,
            proc.rc,
            on_disk,
            st.requests,
            st.timeouts,
            st.repeated_timeouts,
            st.records_served,
            st.records_timed_out,
            max(0, st.records_served + st.records_timed_out - n),
            proc.peak_rss,
            note,
        )

    def order(self, order: str) -> tuple[int, list[Row]]:
        """The public files, and the seed, the no-op and the plain listing under ``order``."""
        a = self.args
        server = bl.BenchServer(0.0)
        try:
            n = build(server, a.files, a.seed)
            server.oh.shuffle = order != "stable"
            server.oh.same_ties = order == "same_ties"
            server.oh.capacity = self.capacity
            dest = bl.fresh_dir(self.work / f"m-{order}")
            mirror = [*pr._ohpub_exe(), "--base-url", server.base_url, "--quiet", "mirror"]
            mirror += [str(dest)]
            rows = []
            self.log(f"capacity ({order}): seed mirror of {n} files")
            rows.append(self.measure(server, "ohpub seed", mirror, n, dest))
            self.log(f"capacity ({order}): no-op mirror")
            rows.append(self.measure(server, "ohpub no-op", mirror, n, dest))
            pages = math.ceil(n / PAGE)
            base = f"{server.base_url}/api/public/datafiles/"
            urls = self.work / "pages.txt"
            urls.write_text(
                "".join(f"{base}?limit={PAGE}&offset={i * PAGE}\n" for i in range(pages))
            )
            plain = [sys.executable, str(LISTER), "--concurrency", "1", str(urls)]
            self.log(f"capacity ({order}): plain listing ({pages} pages, one at a time)")
            row = self.measure(server, f"plain listing ({pages} pages)", plain, n, None)
            row.files = len(set(_plain_ids(server, n)))
            rows.append(row)
            shutil.rmtree(dest, ignore_errors=True)
            return n, rows
        finally:
            server.stop()


def _plain_ids(server: bl.BenchServer, n: int) -> list[int]:
    """The files a plain walk of the same pages sees (walked again without the capacity
    model: on a server whose order depends on the request, the same pages bring the same
    files back)."""
    import requests

    server.oh.capacity = None
    out: list[int] = []
    for offset in range(0, max(n, 1), PAGE):
        r = requests.get(
            f"{server.base_url}/api/public/datafiles/",
            params={"limit": PAGE, "offset": offset},
            timeout=60,
        )
        out += [item["id"] for item in r.json()["results"]]
    return out


def render(results: dict[str, list[Row]], n: int, args: argparse.Namespace) -> str:
    out = [
        "| order | run | exit | wall s | files (on disk / seen) | listing requests | timeouts "
        "| re-sent unchanged | records listed | re-sent records | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines = []
    for order, rows in results.items():
        for r in rows:
            out.append(
                f"| {order} | {r.what} | {r.rc} | {r.wall:.1f} | {r.files:,} | {r.requests} "
                f"| {r.timeouts} | {r.repeated} | {r.records:,} | {r.resent:,} "
                f"| {r.rss / 1e6:.0f} |"
            )
        seed, noop, plain = rows
        ok = seed.rc == 0 and noop.rc == 0 and seed.files == n
        lines.append(
            f"- {order}: seed and no-op complete with exit 0, every file on disk: "
            f"**{'MET' if ok else 'MISSED'}**; no request re-sent unchanged: "
            f"**{'MET' if not seed.repeated and not noop.repeated else 'MISSED'}**; no-op "
            f"{noop.wall / plain.wall:.2f}x the plain listing's time and "
            f"{noop.records / max(1, plain.records):.2f}x its records "
            f"(which saw {plain.files:,} of {n:,} files)"
            + (f"; seed: {seed.note}" if seed.note else "")
            + (f"; no-op: {noop.note}" if noop.note else "")
        )
    return "\n".join(out + [""] + lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run capacity",
        description="Issue 17: seed and no-op mirrors against a server with the real one's "
        "capacity (scaled), beside the plain listing.",
    )
    p.add_argument("--files", type=int, default=6293)
    p.add_argument("--scale", type=float, default=0.05, help="of real time (default 1/20)")
    p.add_argument("--orders", default="stable,same_ties")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="600 files (smoke test)")
    p.add_argument("--quiet", "-q", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.files = min(args.files, 600)
    args.orders = args.orders.split(",")
    bad = set(args.orders) - {"stable", "same_ties", "shuffle"}
    if bad:
        p.error(f"unknown order {', '.join(sorted(bad))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = CapacityBench(args)
    started = time.monotonic()
    cap = bench.capacity
    print("# ohpub against a capacity-modelled server (issue 17)\n")
    print(f"- date: {bl.utc_now()}")
    print(f"- machine: {bl.machine()}")
    print(f"- ohpub source: {bl.source_state()}")
    print(
        f"- capacity: {cap.per_record * 1000:.2f} ms per record on {cap.cores} core, router "
        f"limit {cap.timeout:g} s (the loaded real server at {args.scale:g} of real time)\n",
        flush=True,
    )
    results: dict[str, list[Row]] = {}
    n = 0
    try:
        for order in args.orders:
            n, results[order] = bench.order(order)
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    print(render(results, n, args), flush=True)
    print(f"total benchmark time {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps({k: [asdict(r) for r in v] for k, v in results.items()}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
